"""`kagglecifar doctor`: what this machine offers and the plan each device gets, before a long command fails."""

from __future__ import annotations

import platform
import shutil
import sys
from pathlib import Path
from typing import Optional

import typer

from kagglecifar.cli.app import DATA_DIR, DEVICE, app, examples, summary


def free_disk(folder: Path) -> str:
    """Free space on the disk that holds `folder` (or its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    return f"{free / 2**30:.1f} GiB free on the disk of {folder}"


@app.command(epilog=examples("kagglecifar doctor", "kagglecifar doctor --device cuda:1 --data-dir /data/cifar"))
def doctor(data_dir: Optional[Path] = DATA_DIR, device: str = DEVICE) -> None:
    """Python, torch (its CUDA build and the GPUs it has kernels for), the driver, each device with the plan it
    gets (precision, compile, memory layout, DDP backend), Kaggle credentials (present or not, never their
    value), the cache and free disk. Exits 1 when the plan for --device cannot run."""
    from kagglecifar.cache import is_complete
    from kagglecifar.device import device_plan, resolve_device, torch_facts, visible_devices
    from kagglecifar.errors import KaggleCifarError
    from kagglecifar.kaggle_io.client import credentials_source
    from kagglecifar.kaggle_io.kaggle_env import default_dir

    data_dir = data_dir or default_dir("data")
    rows = [("Python", f"{sys.version.split()[0]} ({platform.platform()})"), *torch_facts()]
    for dev, what in visible_devices():
        rows.append((f"device {dev}", what))
        rows.append(("  plan", device_plan(dev).line().split(": ", 1)[1]))
    found, where = credentials_source()
    rows.append(("Kaggle credentials", f"found ({where})" if found else f"missing: {where}"))
    for split in ("train", "test"):
        state = "complete" if is_complete(data_dir, split) else "not built (kagglecifar fetch builds it)"
        rows.append((f"cache {split}", f"{state} in {data_dir}"))
    rows.append(("disk", free_disk(data_dir)))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"{name:<{width}}  {value}")
    plan = device_plan(resolve_device(device))  # a device that does not exist here: one line, exit 1
    if not plan.kernels:
        raise KaggleCifarError(f"--device {device}: {plan.kernels_note}")
    summary(f"doctor: --device {device} runs here: {plan.line()}")
