"""What every model shares: the input contract (float NCHW in [0, 1], normalised by the model's first layer)
and the helpers the families use."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kagglecifar.errors import KaggleCifarError

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def scaled(channels: int, width: float) -> int:
    """`channels` times the width multiplier, rounded to a multiple of 8 (kept as is at width 1)."""
    if width == 1:
        return channels
    return max(8, int(channels * width / 8 + 0.5) * 8)


def check_common(name: str, width: float, dropout: float) -> None:
    if not width > 0:
        raise KaggleCifarError(f"model {name!r}: width must be positive, got {width}")
    if not 0 <= dropout < 1:
        raise KaggleCifarError(f"model {name!r}: dropout must be in [0, 1), got {dropout}")


class Normalize(nn.Module):
    """Per-channel standardisation as the model's first layer."""

    def __init__(self, mean=CIFAR_MEAN, std=CIFAR_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def to_model_input(images: torch.Tensor, device, channels_last: bool = False) -> torch.Tensor:
    """uint8 NHWC batch -> float NCHW in [0, 1] on `device` (float batches pass through, moved)."""
    images = images.to(device, non_blocking=True)
    if images.dtype != torch.uint8:
        return images.float()
    images = images.permute(0, 3, 1, 2).float().div_(255)  # the permuted view is channels_last already
    return images if channels_last else images.contiguous()


def resized(x: torch.Tensor, size: int) -> torch.Tensor:
    """NCHW images upsampled (bilinear) to size x size on their device, for backbones pretrained at that size;
    unchanged when they already have it. Normalise first: per-channel affine, so the same and cheaper."""
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x
