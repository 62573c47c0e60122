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


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
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
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions}


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or of its finished children), in MB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


def run_measured(argv: list[str]) -> dict:
    """Run a command in a fresh process; return its wall time, peak RSS and the JSON it prints last."""
    started = time.perf_counter()
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - started
    result = json.loads(out.strip().splitlines()[-1])
    result.setdefault("seconds", seconds)
    return result


def ensure_replica(name: str, *options: str) -> Path:
    """bench-data/NAME: a replica of the competition download, built once with the shared tool."""
    out = DEFAULT_DATA / name
    if not (out / "sampleSubmission.csv").exists():
        subprocess.run([sys.executable, str(REPLICA_TOOL), "--out", str(out), *options], check=True)
    return out


def write_result(name: str, result: dict, command: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    doc = {"benchmark": name, "command": command, "date": time.strftime("%Y-%m-%d %H:%M"),
           "machine": machine_info(), **result}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return path
