"""Moving prediction batches between the host and the device so that reading, copying and computing overlap.

device_batches   uint8 NHWC images (a memory map is fine) -> float NCHW batches in [0, 1] on the device;
                 on CUDA read into one of two pinned buffers and copied on a side stream, so the next
                 batch is read and copied while the current one computes
HostResults      a batch's results copied back once (not once per view), on CUDA without waiting: each
                 copy is collected when the next batch's is queued
default_batch_size   per device: 256 on a CPU (measured on 2 cores: 2.2x faster than 1024), on CUDA what
                 a share of the free memory holds at the model's input size, at most 1024
"""

from __future__ import annotations

import numpy as np
import torch

# 1,024 images of 32 px a batch on a CPU: the per-batch work around the net costs a third of the time at 256
# (ONNX Runtime, the cpu preset's net: 8.3 s against 12.3 s for 50,000 images); larger inputs get
# proportionally fewer images (16 at 224 px), so that memory stays as for 32 px.
CPU_BATCH = 1024
MIN_CPU_BATCH = 8
MAX_GPU_BATCH = 1024
MIN_GPU_BATCH = 16
# Bytes per input pixel that a CIFAR net keeps alive in inference, generously (64 fp32 channels, 8 live
# tensors): 2 MiB per 32 px image, 100 MiB per 224 px one.
BYTES_PER_PIXEL = 64 * 4 * 8
FREE_MEMORY_SHARE = 0.5


def default_batch_size(device: torch.device, models=(), image_size: int = 32) -> int:
    """A batch that fits, a power of two for the largest input size the models work at (a model's `image_size`,
    e.g. 224 for resnet50-imagenet): off CUDA CPU_BATCH at 32 px, fewer in proportion to the pixels above it;
    on CUDA what half the free memory holds."""
    size = max([image_size, *(getattr(model, "image_size", image_size) for model in models)])
    if device.type != "cuda":
        batch = CPU_BATCH
        while batch > MIN_CPU_BATCH and batch * size * size > CPU_BATCH * 32 * 32:
            batch //= 2
        return batch
    free, _total = torch.cuda.mem_get_info(device)
    fits = int(free * FREE_MEMORY_SHARE // (size * size * BYTES_PER_PIXEL))
    batch = MIN_GPU_BATCH
    while batch * 2 <= min(fits, MAX_GPU_BATCH):
        batch *= 2
    return batch


def device_batches(images, batch_size: int, device: torch.device):
    """Yield (rows, batch): the slice of `images` and its float NCHW channels_last batch on `device`."""
    if device.type != "cuda":
        for start in range(0, len(images), batch_size):
            rows = slice(start, min(start + batch_size, len(images)))
            batch = torch.from_numpy(np.array(images[rows]))  # a writable copy off the memory map
            yield rows, batch.to(device).permute(0, 3, 1, 2).float().div_(255)
        return
    yield from _cuda_batches(images, batch_size, device)


def _cuda_batches(images, batch_size: int, device: torch.device):
    pinned = [torch.empty((batch_size, *images.shape[1:]), dtype=torch.uint8).pin_memory() for _ in range(2)]
    copied: list[torch.cuda.Event | None] = [None, None]  # the event after the last copy out of each pinned buffer
    side = torch.cuda.Stream(device)
    compute = torch.cuda.current_stream(device)

    def start_copy(index: int, start: int):
        rows = slice(start, min(start + batch_size, len(images)))
        buffer = pinned[index % 2][: rows.stop - rows.start]
        previous = copied[index % 2]
        if previous is not None:
            previous.synchronize()  # the buffer's previous batch has left it
        buffer.numpy()[...] = images[rows]
        with torch.cuda.stream(side):
            on_device = buffer.to(device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(side)
            copied[index % 2] = event
        return rows, on_device

    starts = range(0, len(images), batch_size)
    pending = start_copy(0, 0) if len(starts) else None
    for index in range(len(starts)):
        rows, on_device = pending
        compute.wait_stream(side)
        on_device.record_stream(compute)  # allocated on the side stream, used on this one
        yield rows, on_device.permute(0, 3, 1, 2).float().div_(255)
        # The caller has queued this batch's work: read and copy the next one while the device computes.
        if index + 1 < len(starts):
            pending = start_copy(index + 1, starts[index + 1])


class HostResults:
    """Results of each batch into a host array: out[:, rows] = values (a (K, B, C) device tensor)."""

    def __init__(self, out: np.ndarray, device: torch.device):
        self.out, self.cuda = out, device.type == "cuda"
        self.pending: tuple[slice, torch.Tensor, torch.cuda.Event] | None = None

    def put(self, rows: slice, values: torch.Tensor) -> None:
        if not self.cuda:
            self.out[:, rows] = values.cpu().numpy()
            return
        host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
        host.copy_(values, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        self.collect()
        self.pending = (rows, host, done)

    def collect(self) -> None:
        if self.pending is not None:
            rows, host, done = self.pending
            done.synchronize()
            self.out[:, rows] = host.numpy()
            self.pending = None
