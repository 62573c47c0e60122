"""The device policy: what each GPU, Apple's MPS and the CPU get (precision, compile, layout, DDP backend,
kernels), chosen from torch's answers, which these tests set by monkeypatching torch.cuda's functions."""

import contextlib
import os
import platform
import resource
import subprocess
import sys

import pytest
import torch

from kagglecifar import device as device_policy
from kagglecifar.device import device_plan, kernels_for, training_device
from kagglecifar.errors import KaggleCifarError
from kagglecifar.training import runtime

ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # what the pinned torch wheel carries


def fake_gpu(monkeypatch, capability, name="NVIDIA Test GPU", archs=ARCHS, triton=True, cc="/usr/bin/cc"):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(device_policy.importlib.util, "find_spec", lambda n: object() if triton else None)
    monkeypatch.setattr(device_policy, "c_compiler", lambda: cc)


@pytest.mark.parametrize(
    "capability, name, precision, compiles, kernels",
    [
        ((6, 0), "Tesla P100-PCIE-16GB", "fp32", False, False),
        ((7, 5), "Tesla T4", "fp16", True, True),
        ((8, 0), "NVIDIA A100-SXM4-40GB", "bf16", True, True),
        ((8, 9), "NVIDIA L4", "bf16", True, True),
        ((9, 0), "NVIDIA H100 80GB HBM3", "bf16", True, True),
    ],
)
def test_each_cuda_capability_gets_its_precision_compile_and_kernels(
    monkeypatch, capability, name, precision, compiles, kernels
):
    fake_gpu(monkeypatch, capability, name)
    plan = device_plan(torch.device("cuda", 0))
    assert (plan.precision, plan.compile, plan.kernels) == (precision, compiles, kernels)
    assert plan.backend == "nccl" and plan.channels_last and plan.capability == capability
    assert plan.mixed_precision(amp=False) == "fp32"
    line = plan.line(amp=True, compile=True)
    assert name in line and f"sm_{capability[0]}{capability[1]}" in line
    if not compiles:
        assert "Triton needs compute capability 7.0" in line
    if not kernels:
        assert "no kernels for Tesla P100" in line and "--device cpu" in line


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled")
def test_the_autocast_and_scaler_follow_the_precision(monkeypatch):
    made = []
    monkeypatch.setattr(torch, "autocast", lambda device_type, dtype=None, **kw: made.append((device_type, dtype)))
    fake_gpu(monkeypatch, (7, 5))
    t4 = device_plan("cuda:0")
    t4.autocast(amp=True)
    assert made == [("cuda", torch.float16)]
    assert isinstance(t4.grad_scaler(amp=True), torch.amp.GradScaler) and t4.grad_scaler(amp=False) is None
    fake_gpu(monkeypatch, (9, 0))
    h100 = device_plan("cuda:0")
    h100.autocast(amp=True)
    assert made[-1] == ("cuda", torch.bfloat16) and h100.grad_scaler(amp=True) is None
    assert isinstance(h100.autocast(amp=False), contextlib.nullcontext)


def test_mps_and_cpu_run_fp32_and_never_construct_an_autocast(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.autocast constructed for a device without autocast")

    monkeypatch.setattr(torch, "autocast", refuse)
    mps, cpu = device_plan(torch.device("mps")), device_plan(torch.device("cpu"))
    assert (mps.precision, mps.compile, mps.channels_last, mps.backend) == ("fp32", False, False, "gloo")
    assert (cpu.precision, cpu.channels_last, cpu.backend) == ("fp32", True, "gloo")
    for plan in (mps, cpu):
        with plan.autocast(amp=True):
            pass
        assert plan.grad_scaler(amp=True) is None and plan.kernels


def test_compile_falls_back_to_eager_with_the_reason(monkeypatch):
    fake_gpu(monkeypatch, (8, 0), triton=False)
    plan = device_plan("cuda:0")
    assert not plan.compile and "eager: Triton is not installed" in plan.line(compile=True)
    fake_gpu(monkeypatch, (8, 0), cc=None)
    assert "no C compiler" in device_plan("cuda:0").line(compile=True)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CXX", raising=False)
    cpu = device_plan("cpu")
    assert not cpu.compile and "no C++ compiler found" in cpu.line(compile=True)
    monkeypatch.setenv("CXX", "/bin/sh")  # any program found counts as the compiler named in CXX
    assert device_plan("cpu").compile


@pytest.mark.parametrize(
    "capability, archs, has",
    [
        ((8, 6), ["sm_80"], True),  # sm_80 code runs on 8.6
        ((8, 0), ["sm_86"], False),  # but not the other way round
        ((9, 0), ["sm_80", "compute_80"], True),  # PTX the driver compiles for a newer card
        ((6, 0), ARCHS, False),  # a P100 on a wheel built for sm_75+
        ((6, 1), ["sm_50", "sm_60"], True),
        ((9, 0), ["sm_90a"], True),
    ],
)
def test_kernels_are_found_by_binary_and_ptx_compatibility(capability, archs, has):
    assert kernels_for(capability, archs)[0] is has


def test_the_ddp_backend_is_nccl_for_cuda_only(monkeypatch):
    assert device_policy.ddp_backend(torch.device("cuda", 1)) == "nccl"
    assert device_policy.ddp_backend(torch.device("mps")) == "gloo"
    assert device_policy.ddp_backend(torch.device("cpu")) == "gloo"
    chosen = []

    def init(backend):
        chosen.append(backend)
        raise RuntimeError("stop here")

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", init)
    with pytest.raises(RuntimeError, match="stop here"):
        with runtime.distributed(torch.device("mps"), 4):
            pass
    assert chosen == ["gloo"]


def test_stop_checks_under_nccl_agree_on_the_host(monkeypatch):
    """The time-budget/Ctrl-C agreement goes through a gloo group on CPU tensors: no wait for the GPU queue."""
    seen = []
    host = object()
    monkeypatch.setattr(torch.distributed, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(runtime, "host_group", lambda: host)
    monkeypatch.setattr(
        torch.distributed, "all_reduce", lambda tensor, op=None, group=None: seen.append((tensor.device.type, group))
    )
    stop = runtime.StopRequest(0, 0.0)
    assert stop.check(world=2, step=7) == "completed" and seen == []  # only every 10 steps
    assert stop.check(world=2, step=10) == "completed"
    assert seen == [("cpu", host)]


def test_a_fixed_gpu_is_refused_when_several_processes_train(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(KaggleCifarError, match="--device cuda:1: 2 processes would all train on one GPU"):
        training_device("cuda:1")
    assert training_device("cpu") == torch.device("cpu")


def test_doctor_prints_the_plan_credentials_presence_cache_and_disk(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", "s3cr3t-kaggle-key")
    code, out, err = run_cli("doctor", "--device", "cpu", "--data-dir", tmp_path / "data")
    assert code == 0, err
    assert "s3cr3t-kaggle-key" not in out + err
    assert "found (KAGGLE_USERNAME/KAGGLE_KEY)" in out
    assert f"not built (kagglecifar fetch builds it) in {tmp_path / 'data'}" in out
    assert "GiB free on the disk of" in out and torch.__version__ in out
    assert out.strip().splitlines()[-1].startswith("doctor: --device cpu runs here: device cpu (CPU): fp32")


def test_doctor_exits_1_when_torch_has_no_kernels_for_the_gpu(tmp_path, run_cli, monkeypatch):
    class Props:
        name, major, minor, total_memory = "Tesla P100-PCIE-16GB", 6, 0, 16 * 2**30

    fake_gpu(monkeypatch, (6, 0), "Tesla P100-PCIE-16GB")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: Props)
    code, out, err = run_cli("doctor", "--device", "cuda", "--data-dir", tmp_path)
    assert code == 1
    assert "device cuda:0" in out and "Tesla P100-PCIE-16GB, capability 6.0, 16.0 GiB" in out
    assert "fp32, eager (Triton needs compute capability 7.0" in out
    assert err.strip().splitlines() == [
        "kagglecifar: error: --device cuda: torch "
        f"{torch.__version__} has no kernels for Tesla P100-PCIE-16GB (sm_60; built for {' '.join(ARCHS)}): "
        "install a torch build for this card (see pytorch.org, 'previous versions') or use --device cpu"
    ]


def test_doctor_with_no_options_reads_the_default_data_folder(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("doctor", "--device", "cpu")
    assert code == 0 and "Traceback" not in err, err
    assert "cache train" in out and "not built" in out and " in data" in out


def test_the_cpu_gets_bf16_autocast_only_where_its_cores_compute_in_bf16(monkeypatch, tmp_path):
    from kagglecifar import device

    monkeypatch.delenv("KAGGLECIFAR_CPU_BF16", raising=False)
    flags = {"avx512_bf16": True, "amx_bf16 amx_tile": True, "avx512f avx2": False}
    real_open = open
    for line, native in flags.items():
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {line} fma\n")
        monkeypatch.setattr(
            "builtins.open", lambda p, *a, info=info, **k: real_open(info if p == "/proc/cpuinfo" else p, *a, **k)
        )
        plan = device_plan("cpu")
        assert device.cpu_computes_bf16() is native
        assert plan.precision == ("bf16" if native else "fp32") and plan.mixed_precision(amp=False) == "fp32"
    monkeypatch.setattr("builtins.open", real_open)
    monkeypatch.setenv("KAGGLECIFAR_CPU_BF16", "1")
    plan = device_plan("cpu")
    with plan.autocast(amp=True):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    assert plan.grad_scaler(amp=True) is None  # bf16 needs no loss scaling
    assert plan.line(True).startswith("device cpu (CPU): bf16 autocast")
    monkeypatch.setenv("KAGGLECIFAR_CPU_BF16", "0")
    assert device_plan("cpu").precision == "fp32"


FAULTS_SCRIPT = """
import resource, torch
from kagglecifar.device import freed_memory_kept
from kagglecifar.models import create_model

torch.manual_seed(0)
torch.set_num_threads(1)  # one thread allocates everything: the count does not depend on the cores
net = create_model("airbench94", num_classes=10, width=0.25).eval()
x = torch.rand(512, 3, 32, 32).contiguous(memory_format=torch.channels_last)

def faults_per_forward(times=3):
    with torch.inference_mode():
        net(x)  # the first pass of a phase may set the heap up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(times):
            net(x)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // times

default = faults_per_forward()
with freed_memory_kept():
    kept = faults_per_forward()
after = faults_per_forward()
print(default, kept, after)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
@pytest.mark.parametrize("switch", ["", "0"])
def test_freed_memory_is_reused_inside_the_context_and_returned_after_it(switch):
    env = {**os.environ, "KAGGLECIFAR_KEEP_FREED_MEMORY": switch}
    done = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT], capture_output=True, text=True, env=env, check=True)
    default, kept, after = map(int, done.stdout.split())
    # Activations of 512 images are several MiB each: by default glibc maps them afresh every pass.
    pages = 4 * 1024 * 1024 // resource.getpagesize()
    assert default >= pages and after >= pages
    if switch == "0":
        assert kept >= pages  # the override leaves glibc alone
    else:
        assert kept < default // 10  # the freed blocks' pages serve the next pass
