"""The device a command runs on and the plan for it: `--device` read the same way by train, predict, evaluate,
tune and the GPU check, and one policy for what runs well there.

    precision       bf16 autocast on CUDA capability >= 8.0; fp16 autocast + GradScaler on 7.x (no bf16
                    convolutions in cuDNN there); fp32 below 7.0 and on Apple's MPS; on the CPU bf16 autocast
                    where the cores compute in bf16 (avx512_bf16 or AMX: the cpu preset's step measured 1.3-1.4x
                    faster on 2 EPYC cores), else fp32 (emulated bf16 measured slower on a 2-core Xeon)
    compile         torch.compile where Inductor can run: Triton and capability >= 7.0 on CUDA, a C++ compiler
                    on the CPU; never on MPS; otherwise eager, with one line saying why
    channels_last   on CUDA and the CPU (measured faster on 2 CPU cores); not on MPS
    backend         DDP over NCCL on CUDA, gloo elsewhere
    kernels         whether the installed torch was built for this GPU (sm_XY code for its major version at or
                    below its minor, or compute_XY PTX at or below its capability that the driver can JIT)

The plan is a pure function of the device and facts about the installed torch (`device_plan`), so tests
choose those facts by monkeypatching torch.cuda's functions.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
from dataclasses import dataclass

import torch

from kagglecifar.errors import KaggleCifarError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto -> CUDA, else Apple's MPS, else CPU; an explicit device must exist here."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not mps_available():
            raise KaggleCifarError(
                f"--device mps: Apple's MPS is not available here (torch {torch.__version__}); use --device cpu"
            )
        return torch.device("mps")
    if name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise KaggleCifarError(f"--device {name}: choose {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise KaggleCifarError(
            f"--device {name}: CUDA is not available here (torch {torch.__version__}); use --device cpu"
        )
    index = int(name[5:]) if name.startswith("cuda:") else local_rank
    if index >= torch.cuda.device_count():
        raise KaggleCifarError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return torch.device("cuda", index)


def training_device(name: str) -> torch.device:
    """The device of this training process: under torchrun each process takes the GPU of its LOCAL_RANK, so a
    fixed `cuda:N` (every process on one GPU) is refused."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and name.startswith("cuda:"):
        raise KaggleCifarError(
            f"--device {name}: {world} processes would all train on one GPU; use --device cuda (each process "
            "takes the GPU of its LOCAL_RANK) and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    return resolve_device(name, int(os.environ.get("LOCAL_RANK", 0)))


def ddp_backend(device: torch.device) -> str:
    """NCCL between CUDA devices; gloo for CPU and MPS processes (NCCL has no MPS)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


# ---- the plan ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DevicePlan:
    device: str  # "cuda:0", "mps", "cpu"
    name: str  # what the device is, e.g. "NVIDIA H100 80GB HBM3"
    capability: tuple[int, int] | None  # CUDA compute capability
    precision: str  # bf16 | fp16 | fp32: what `amp` turns on here
    compile: bool  # torch.compile can run here
    compile_note: str  # why not, when it cannot
    channels_last: bool
    backend: str  # DDP: nccl | gloo
    kernels: bool  # the installed torch has kernels for this device
    kernels_note: str  # what to do, when it has none

    @property
    def type(self) -> str:
        return self.device.split(":")[0]

    def mixed_precision(self, amp: bool = True) -> str:
        """The precision a run with the recipe's `amp` gets here."""
        return self.precision if amp else "fp32"

    def autocast(self, amp: bool = True):
        """A context manager: autocast in the plan's precision, or nothing at all (a device without autocast
        never sees torch.autocast: on MPS even a disabled one raises with torch 2.3/2.4)."""
        precision = self.mixed_precision(amp)
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.type, dtype=AUTOCAST_DTYPES[precision])

    def grad_scaler(self, amp: bool = True):
        """torch.amp.GradScaler for fp16 (gradients underflow without loss scaling), else None."""
        return torch.amp.GradScaler(self.type) if self.mixed_precision(amp) == "fp16" else None

    def line(self, amp: bool = True, compile: bool | None = None, channels_last: bool = True) -> str:
        """One line: the device and what runs on it (compile=None: say only whether it could)."""
        what = self.name + (f", sm_{self.capability[0]}{self.capability[1]}" if self.capability else "")
        precision = self.mixed_precision(amp)
        parts = [
            {"bf16": "bf16 autocast", "fp16": "fp16 autocast + GradScaler", "fp32": "fp32"}[precision],
        ]
        if compile is None:
            parts.append("compile available" if self.compile else f"eager ({self.compile_note})")
        elif compile:
            parts.append("compiled" if self.compile else f"eager: {self.compile_note}")
        else:
            parts.append("eager")
        parts.append("channels_last" if channels_last and self.channels_last else "contiguous")
        parts.append(f"DDP over {self.backend}")
        line = f"device {self.device} ({what}): {', '.join(parts)}"
        return line if self.kernels else f"{line}; {self.kernels_note}"


def device_plan(device: torch.device | str) -> DevicePlan:
    """The plan for `device` from what this machine's torch says about it."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        capability = (int(major), int(minor))
        name = torch.cuda.get_device_name(index)
        kernels, kernels_note = kernels_for(capability, torch.cuda.get_arch_list(), name)
        compile_ok, compile_note = compile_support("cuda", capability)
        return DevicePlan(
            device=f"cuda:{index}",
            name=name,
            capability=capability,
            precision="bf16" if capability >= (8, 0) else "fp16" if capability >= (7, 0) else "fp32",
            compile=compile_ok,
            compile_note=compile_note,
            channels_last=True,
            backend=ddp_backend(device),
            kernels=kernels,
            kernels_note=kernels_note,
        )
    if device.type == "mps":
        return DevicePlan(
            "mps",
            "Apple MPS",
            None,
            "fp32",
            False,
            "torch.compile is experimental on MPS",
            False,
            ddp_backend(device),
            True,
            "",
        )
    compile_ok, compile_note = compile_support("cpu", None)
    precision = "bf16" if cpu_computes_bf16() else "fp32"
    return DevicePlan("cpu", "CPU", None, precision, compile_ok, compile_note, True, ddp_backend(device), True, "")


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic of its own (the avx512_bf16 or amx_bf16 flag of Linux's
    /proc/cpuinfo); KAGGLECIFAR_CPU_BF16=0 or 1 overrides it."""
    chosen = os.environ.get("KAGGLECIFAR_CPU_BF16")
    if chosen in ("0", "1"):
        return chosen == "1"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    return False


# glibc's mallopt parameters (malloc.h) and its defaults for them.
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536


@contextlib.contextmanager
def freed_memory_kept(active: bool = True):
    """Within it, freed memory stays in the process for the next allocation (Linux with glibc; elsewhere, or
    not `active`, it does nothing). glibc serves each block above its mmap threshold (which it moves as it goes,
    up to 32 MiB) with a fresh mapping and unmaps it when freed, so a CPU forward pass at batch 1024 faulted
    its activations in page by page every batch: 11,000-28,000 page faults a batch, as the threshold had
    moved, which made prediction slower and erratic (benchmarks/bench_gate_full.py --allocator); CPU training
    gains a little (4 epochs of the cpu preset: 61.5 and 59.6 s against 67.9 and 62.0 s). Inside,
    blocks come from the heap, which is not trimmed; the outermost one restores glibc's defaults on leaving
    and returns what is free (malloc_trim). KAGGLECIFAR_KEEP_FREED_MEMORY=0 leaves glibc's defaults alone."""
    libc = _glibc() if active and os.environ.get("KAGGLECIFAR_KEEP_FREED_MEMORY") != "0" else None
    if libc is None:
        yield
        return
    if not _KEEPERS:  # nested: the outermost one sets and restores
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # mallopt takes a C int: the most it can say, 2 GiB
    _KEEPERS.append(True)
    try:
        yield
    finally:
        _KEEPERS.pop()
        if not _KEEPERS:
            libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
            libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)


_KEEPERS: list[bool] = []


@functools.cache
def _glibc():
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def usable_plan(device: torch.device | str) -> DevicePlan:
    """device_plan, or one clear line when the installed torch has no kernels for the device (the first op
    would fail with "no kernel image is available")."""
    plan = device_plan(device)
    if not plan.kernels:
        raise KaggleCifarError(plan.kernels_note)
    return plan


def kernels_for(capability: tuple[int, int], arch_list: list[str], name: str = "this GPU") -> tuple[bool, str]:
    """(has kernels, what to do if not): sm_XY code runs on capability X.Y' with Y' >= Y; compute_XY PTX is
    compiled by the driver for any capability >= X.Y."""
    major, minor = capability
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        digits = digits.rstrip("af")  # sm_90a, sm_100f: architecture-specific variants
        if not digits.isdigit() or len(digits) < 2:
            continue
        arch_cap = (int(digits[:-1]), int(digits[-1]))
        if kind == "sm" and arch_cap[0] == major and arch_cap[1] <= minor:
            return True, ""
        if kind == "compute" and arch_cap <= capability:
            return True, ""
    built = " ".join(arch_list) or "none"
    return False, (
        f"torch {torch.__version__} has no kernels for {name} (sm_{major}{minor}; built for {built}): install a "
        f"torch build for this card (see pytorch.org, 'previous versions') or use --device cpu"
    )


def compile_support(device_type: str, capability: tuple[int, int] | None) -> tuple[bool, str]:
    """(torch.compile can run, why not): Inductor needs Triton and capability >= 7.0 on CUDA, and a C/C++
    compiler (Triton builds its launcher with one; the CPU backend writes C++)."""
    if device_type == "cuda":
        if capability is not None and capability < (7, 0):
            return False, f"Triton needs compute capability 7.0 or more, this GPU has {capability[0]}.{capability[1]}"
        if importlib.util.find_spec("triton") is None:
            return False, "Triton is not installed (torch.compile needs it on CUDA)"
        if c_compiler() is None:
            return False, "no C compiler found (set CC or install gcc): Triton needs one"
        return True, ""
    if device_type == "cpu":
        if cxx_compiler() is None:
            return False, "no C++ compiler found (set CXX or install g++): torch.compile needs one on the CPU"
        return True, ""
    return False, f"torch.compile is not used on {device_type}"


def _first_found(variable: str, names: tuple[str, ...]) -> str | None:
    chosen = os.environ.get(variable)
    if chosen:
        return shutil.which(chosen.split()[0])
    return next((path for path in map(shutil.which, names) if path), None)


def c_compiler() -> str | None:
    return _first_found("CC", ("cc", "gcc", "clang"))


def cxx_compiler() -> str | None:
    return _first_found("CXX", ("c++", "g++", "clang++"))


# ---- what `kagglecifar doctor` reports about torch and the devices ------------------------------------


def torch_facts() -> list[tuple[str, str]]:
    """(what, value) about the installed torch: version, CUDA build, the GPU code it carries, the driver."""
    facts: list[tuple[str, str]] = [("torch", str(torch.__version__))]
    if torch.version.cuda:
        facts.append(
            ("torch CUDA build", f"CUDA {torch.version.cuda}, kernels for {' '.join(torch.cuda.get_arch_list())}")
        )
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        facts.append(("cuDNN", str(cudnn) if cudnn else "not available"))
    else:
        facts.append(("torch CUDA build", "none (a CPU build)"))
    facts.append(("NVIDIA driver", nvidia_driver() or "none found"))
    facts.append(("Triton", "installed" if importlib.util.find_spec("triton") else "not installed"))
    facts.append(("C/C++ compiler", f"{c_compiler() or 'no C compiler'}, {cxx_compiler() or 'no C++ compiler'}"))
    return facts


def nvidia_driver() -> str | None:
    """The driver version nvidia-smi reports, or None without one."""
    import subprocess

    program = shutil.which("nvidia-smi")
    if program is None:
        return None
    try:
        done = subprocess.run(
            [program, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    versions = sorted(set(done.stdout.split()))
    return ", ".join(versions) if done.returncode == 0 and versions else None


def visible_devices() -> list[tuple[torch.device, str]]:
    """Every device this process can use, with what it is (memory for GPUs), CUDA first, the CPU last."""
    found = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            found.append(
                (
                    torch.device("cuda", index),
                    f"{props.name}, capability {props.major}.{props.minor}, {props.total_memory / 2**30:.1f} GiB",
                )
            )
    if mps_available():
        found.append((torch.device("mps"), "Apple MPS"))
    found.append((torch.device("cpu"), f"{os.cpu_count() or 1} cores, {torch.get_num_threads()} torch threads"))
    return found
