"""Shared by every benchmark: machine facts, peak memory, and writing results/NAME.json."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parent.parent / "bench-data"
REPLICA_TOOL = Path(__file__).resolve().parent.parent.parent / "shared" / "tools" / "make-kaggle-cifar10"


# Flags that decide which kernels PyTorch and ONNX Runtime run on a CPU (bf16, int8 dot products, AMX tiles).
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "avx512_vp2intersect")


def cpu_info() -> dict:
    """The CPU's name and, on Linux, its family/model/stepping and kernel-relevant flags: a cloud's "AMD EPYC"
    names several generations (the same `make run` took 270 s on one and 178 s on another)."""
    info: dict = {"cpu": platform.processor()}
    try:
        fields = dict(
            (key.strip(), value.strip())
            for key, _, value in (line.partition(":") for line in Path("/proc/cpuinfo").read_text().splitlines())
            if key.strip() in ("model name", "cpu family", "model", "stepping", "flags")
        )
    except OSError:
        return info
    info["cpu"] = fields.get("model name", info["cpu"])
    if "cpu family" in fields:
        info["cpu_family_model_stepping"] = "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping"))
    flags = set(fields.get("flags", "").split())
    info["cpu_flags"] = [flag for flag in CPU_FLAGS if flag in flags]
    return info


def machine_info() -> dict:
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    versions = {}
    for name in ("torch", "torchvision", "albumentations", "opencv-python-headless", "numpy", "py7zr", "pillow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {
        **cpu_info(),
        "cores": os.cpu_count(),
        "gpu": gpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or of its finished children), in MB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


def run_measured(argv: list[str]) -> dict:
    """Run a command in a fresh process; return the JSON it prints last, plus its wall time and the
    peak resident memory of its whole process tree (sampled every 50 ms, children included)."""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    tree, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            rss = tree.memory_info().rss + sum(c.memory_info().rss for c in tree.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:  # a process ended between listing and reading
            pass
        time.sleep(0.05)
    out = proc.stdout.read()
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv, out)
    result = json.loads(out.strip().splitlines()[-1])
    result.setdefault("seconds", round(time.perf_counter() - started, 2))
    result["peak_tree_rss_mb"] = round(peak / 2**20)
    return result


def ensure_replica(name: str, *options: str) -> Path:
    """bench-data/NAME: a replica of the competition download, built once with the shared tool."""
    out = DEFAULT_DATA / name
    if not (out / "sampleSubmission.csv").exists():
        subprocess.run([sys.executable, str(REPLICA_TOOL), "--out", str(out), *options], check=True)
    return out


def replica_data(name: str = "full") -> Path:
    """bench-data/NAME-data: a data folder with both caches and the CSVs, built once from the replica
    with `kagglecifar fetch --from-dir` (which skips what is up to date)."""
    from kagglecifar import pipeline

    data_dir = DEFAULT_DATA / f"{name}-data"
    pipeline.fetch("cifar-10", data_dir, from_dir=ensure_replica(name))
    return data_dir


def write_result(name: str, result: dict, command: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    # The variables that change what kagglecifar runs (KAGGLECIFAR_CPU_BF16=0: as on a CPU without bf16
    # arithmetic) lead the command, so that it reproduces as written.
    settings = [f"{key}={value}" for key, value in sorted(os.environ.items()) if key.startswith("KAGGLECIFAR_")]
    doc = {
        "benchmark": name,
        "command": " ".join([*settings, command]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine_info(),
        **result,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return path
