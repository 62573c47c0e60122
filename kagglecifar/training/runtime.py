"""How training runs: torchrun/DDP processes, all-reduce, RNG state, clean stops."""

from __future__ import annotations

import contextlib
import gc
import os
import random
import signal
import threading
import time
from typing import cast

import numpy as np
import torch

from kagglecifar.device import ddp_backend
from kagglecifar.errors import KaggleCifarError

# ---- several processes (torchrun) ------------------------------------------------------------------


_host_group = None  # with NCCL: a gloo group over the same processes, for agreements that stay on the host


def host_group():
    """The process group for small host-side agreements (stop checks): gloo beside NCCL, so that agreeing
    does not wait for the GPU's queue to drain; None (the default group) when that is gloo already."""
    return _host_group


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1)) if "RANK" in os.environ else 1


@contextlib.contextmanager
def distributed(device: torch.device, batch_size: int):
    """(rank, world size) for this process; under torchrun with several processes, a process group
    that is torn down on the way out, whatever happens inside."""
    world = world_size()
    if world == 1:
        yield 0, 1
        return
    if batch_size % world:
        raise KaggleCifarError(f"--batch-size {batch_size}: must divide evenly over {world} processes")
    global _host_group
    started_here = not torch.distributed.is_initialized()
    if started_here:
        torch.distributed.init_process_group(ddp_backend(device))
    if ddp_backend(device) == "nccl":
        _host_group = torch.distributed.new_group(backend="gloo")
    try:
        yield torch.distributed.get_rank(), world
        # What the body built (a DDP wrapper's reducer and its gloo/NCCL work sit in reference cycles) must go
        # while the group is alive: left to the interpreter's exit, its teardown aborts the process
        # ("terminate called without an active exception").
        gc.collect()
        torch.distributed.barrier()  # nobody tears down while another rank still talks
    finally:
        _host_group = None
        if started_here:
            torch.distributed.destroy_process_group()


def all_reduce(values: list[float], world: int, op: str = "sum", on_host: bool = False) -> list[float]:
    """Sum (or max) of `values` over every process; the values themselves with one process. on_host: through
    the host group (host_group), never touching the GPU."""
    if world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    group = host_group() if on_host else None
    if not on_host and torch.distributed.get_backend() == "nccl":
        tensor = tensor.cuda()
    reduce_op = torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM
    torch.distributed.all_reduce(tensor, op=reduce_op, group=group)
    return tensor.tolist()


def check_in_sync(model: torch.nn.Module, world: int) -> None:
    """DDP must leave identical weights on every rank; fail loudly if not."""
    total = float(sum(p.detach().double().sum().item() for p in model.parameters()))
    sums: list[float | None] = [None] * world
    torch.distributed.all_gather_object(sums, total)
    if len(set(sums)) != 1:
        raise RuntimeError(f"DDP ranks ended with different weights: {sums}")


# ---- RNG state (saved in last.pt, loadable with weights_only=True) ----------------------------------


def rng_state(cuda: bool) -> dict:
    """Every RNG state as tensors and plain numbers."""
    kind, keys, pos, has_gauss, cached = cast(tuple, np.random.get_state())  # legacy: the MT19937 tuple
    version, py_state, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss},
    }
    if cuda:
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict, cuda: bool) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"]), p["gauss"]))
    if cuda and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


# ---- clean stops --------------------------------------------------------------------------------


class StopRequest:
    """Time budget, Ctrl-C and SIGTERM, checked at step boundaries (agreed across DDP ranks every 10 steps, on
    the host: the GPU keeps its queue of steps).

    The first Ctrl-C or SIGTERM asks for a clean stop (finish the step, save last.pt); a second Ctrl-C
    aborts at once.
    """

    SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, budget: float, started: float, echo=print):
        self.budget, self.started, self.echo, self.interrupted = budget, started, echo, False

    @contextlib.contextmanager
    def catching_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in self.SIGNALS}

        def handler(signum, frame):
            self.interrupted = True
            for s, h in previous.items():
                signal.signal(s, h)  # a second signal acts at once
            self.echo("kagglecifar: stopping after this step and saving last.pt (Ctrl-C again to abort)")

        for s in self.SIGNALS:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def check(self, world: int, step: int, at_epoch_end: bool = False) -> str:
        over = bool(self.budget) and time.monotonic() - self.started >= self.budget
        code = 2 if self.interrupted else 1 if over else 0
        if world > 1:
            if step % 10 and not at_epoch_end:
                return "completed"
            code = int(all_reduce([code], world, op="max", on_host=True)[0])  # no wait for the GPU's queue
        return ("completed", "time_budget", "interrupted")[code]
