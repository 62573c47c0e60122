"""`train --processes N`: the DDP workers launched by the command itself, through torch's elastic launcher (what
torchrun runs), so that one command, or one notebook cell, trains on every GPU (e.g. Kaggle's 2x T4); on the CPU
N gloo processes.

Workers are started with spawn, never fork: the parent may have touched CUDA (a notebook kernel often has).
Each worker is an ordinary torchrun-style process (RANK, WORLD_SIZE, LOCAL_RANK set), so training code is the
one torchrun runs. Stopping: Ctrl-C or SIGTERM in the parent sends SIGTERM to every worker, which stops at a step
boundary with last.pt saved (StopRequest); whatever still runs after the grace period is killed. The workers
ignore SIGINT themselves: the terminal's Ctrl-C reaches the whole process group, and one stop request each is
what they should get.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path

from kagglecifar.config import TrainConfig, from_flat
from kagglecifar.errors import KaggleCifarError

SHUTDOWN_SECONDS = 60  # a stopping worker saves last.pt, the curves and the confusion matrix first
HANDLED_SIGNALS = ("SIGTERM", "SIGHUP", "SIGQUIT")  # the launcher turns these into a stop of every worker


def default_processes(device: str) -> int:
    """One per visible CUDA GPU when there are several and the device allows it, else 1."""
    if device not in ("auto", "cuda"):
        return 1
    import torch

    count = torch.cuda.device_count()
    return count if count > 1 else 1


def train_processes(config: TrainConfig):
    """Train as configured: in this process, or in config.session.processes launched workers."""
    from kagglecifar.training import train

    processes = config.session.processes or default_processes(config.session.device)
    if processes == 1 or "RANK" in os.environ:  # one process, or already a worker (torchrun)
        return train.train(config)
    check_processes(config, processes)
    return launch(config, processes)


def check_processes(config: TrainConfig, processes: int) -> None:
    device, batch = config.session.device, config.recipe.batch_size
    if batch % processes:
        raise KaggleCifarError(f"--batch-size {batch}: must divide evenly over {processes} processes")
    if device.startswith("cuda:"):
        raise KaggleCifarError(
            f"--processes {processes} --device {device}: every process would use that one GPU; "
            "give --device cuda (process N uses GPU N)"
        )
    if device in ("auto", "cuda"):
        import torch

        count = torch.cuda.device_count()
        if count and processes > count:
            raise KaggleCifarError(f"--processes {processes}: only {count} CUDA device(s) here")
    if device == "mps":
        raise KaggleCifarError(f"--processes {processes}: several processes need CUDA or the CPU, not mps")


def launch(config: TrainConfig, processes: int):
    """Run `processes` workers to the end; rank 0's TrainResult, also when stopped (Ctrl-C, SIGTERM): then
    stopped_reason "interrupted", as in one process."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    launch_config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=f"kagglecifar-{uuid.uuid4().hex}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port, as torchrun --standalone
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
        signals_to_handle=",".join(HANDLED_SIGNALS),
        shutdown_timeout=SHUTDOWN_SECONDS,
    )
    threads = max(1, (os.cpu_count() or 1) // processes)
    handlers = {name: signal.getsignal(getattr(signal, name)) for name in ("SIGINT", *HANDLED_SIGNALS)}
    previous_env = os.environ.get("TORCHELASTIC_SIGNALS_TO_HANDLE")
    before = _spawned_children()
    descriptor, report = tempfile.mkstemp(prefix="kagglecifar-stopped-", suffix=".json")
    os.close(descriptor)
    stopped = False
    try:
        results = elastic_launch(launch_config, worker)(config.to_dict(), threads, report)
    except (KeyboardInterrupt, SignalException):  # the launcher has stopped the workers (SIGTERM, then SIGKILL)
        stopped = True
    except ChildFailedError as exc:
        failure = next(iter(exc.failures.values()))
        raise RuntimeError(f"train --processes {processes}: a worker failed ({failure.message})") from None
    finally:
        _stop_leftovers(before)  # e.g. a second Ctrl-C during the launcher's own shutdown
        if os.environ.get("TORCHELASTIC_SIGNALS_TO_HANDLE") != previous_env:  # the launcher sets it for good
            os.environ.pop("TORCHELASTIC_SIGNALS_TO_HANDLE", None)
            if previous_env is not None:
                os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = previous_env
        for name, handler in handlers.items():  # a notebook kernel keeps its own handlers
            if handler is not None:
                signal.signal(getattr(signal, name), handler)
        stopped_result = _read_report(report)
        os.unlink(report)
    if stopped:
        gc.collect()  # the launcher's queues: their semaphores released now, not reported as leaked at exit
        if stopped_result is None:  # stopped before rank 0 had a run to report
            raise KeyboardInterrupt
        return stopped_result
    errors = [value for value in results.values() if isinstance(value, str)]
    if errors:
        raise KaggleCifarError(errors[0])
    return results[0]


def _read_report(path: str):
    from kagglecifar.training.train import TrainResult

    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return TrainResult(**{**values, "run_dir": Path(values["run_dir"])}) if values else None


def worker(values: dict, threads: int, report: str):
    """One DDP process: rank 0 returns the TrainResult; a user error comes back as its one-line message."""
    import threading

    import torch
    from tqdm import tqdm

    from kagglecifar.training import runtime, train

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runtime.StopRequest.SIGNALS = (signal.SIGTERM,)
    # tqdm's default lock is a multiprocessing semaphore, which a stopped worker (os._exit below) would leave
    # to the resource tracker's "leaked semaphore" warning; a worker's bars need no lock across processes.
    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(threads)
    flat = {**values["recipe"], **values["session"]}
    try:
        result = train.train(from_flat(flat, values.get("preset", "")))
    except KaggleCifarError as exc:
        return str(exc)
    if result.stopped_reason == "interrupted":
        # Stopped by the launcher's SIGTERM: it is shutting down and reads no return value (the parent reads
        # `report`), and the launcher's wrapper around this function would wait for it to, until killed.
        if os.environ.get("RANK") == "0":
            Path(report).write_text(json.dumps({**asdict(result), "run_dir": str(result.run_dir)}))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return result


def _spawned_children() -> set[int]:
    try:
        import psutil

        return {p.pid for p in psutil.Process().children(recursive=True)}
    except (ImportError, OSError):  # psutil.Error is an OSError
        return set()


def _stop_leftovers(before: set[int]) -> None:
    """Workers this launch started that still run: terminated, then killed (without psutil the launcher's own
    shutdown is all there is)."""
    try:
        import psutil

        children = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    except (ImportError, OSError):
        return
    workers = []
    for process in children:
        try:
            if "spawn_main" in " ".join(process.cmdline()):
                workers.append(process)
                process.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(workers, timeout=SHUTDOWN_SECONDS)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
