"""airbench-class nets (after Keller Jordan's airbench): a frozen whitening stem, then three conv groups.

    stem     2x2 conv, 3 -> 24 channels, no padding (32 -> 31 px): its weights whiten 2x2 patches (the
             eigenvectors of their covariance, +- each, scaled by 1/sqrt(eigenvalue)) and stay frozen;
             its bias trains for the first WHITEN_BIAS_EPOCHS epochs (then its learning rate is 0:
             `frozen_groups`)
    groups   conv3x3 - maxpool2 - BN - GELU - conv3x3 - BN - GELU (31 -> 15 -> 7 -> 3 px); depth 3
             adds a third conv with a residual over the last two (airbench96)
    head     global max-pool, linear without bias, logits scaled by 1/9

BatchNorm scales are frozen at 1 (only the shifts train), eps is tiny and the running statistics follow
the batch quickly (momentum 0.4 in PyTorch's convention). Each 3x3 conv starts as the identity on its
first c_in output channels (Dirac init) and default-random on the others.

The whitening weights come from data: the trainer calls `model.init_whitening(images)` once, with a few
thousand training images, before it builds the optimizer or an EMA copy. They are a frozen parameter,
so a checkpoint restores them (and the `whitened` flag) without any data.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kagglecifar.models.layers import Normalize, check_common, scaled
from kagglecifar.models.registry import register

WHITEN_KERNEL = 2
WHITEN_CHANNELS = 2 * 3 * WHITEN_KERNEL**2  # every eigenvector and its negation: GELU keeps both signs
LOGIT_SCALE = 1 / 9
WHITEN_BIAS_EPOCHS = 3  # the stem's bias trains this many epochs, then freezes (airbench)
WHITEN_IMAGES = 5000  # training images whose 2x2 patches set the stem
BIAS_LR_SCALE = 64.0  # BatchNorm shifts learn this much faster, with the same decay per step


class FrozenScaleBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose scale stays 1: only the shift (bias) trains."""

    def __init__(self, channels: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


class DiracConv(nn.Conv2d):
    """3x3 'same' conv without bias whose first in_channels filters start as the identity."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, 3, padding=1, bias=False)

    def reset_parameters(self):
        super().reset_parameters()
        with torch.no_grad():
            nn.init.dirac_(self.weight[: min(self.in_channels, self.out_channels)])


# gelu is airbench's; relu and silu measured lower (benchmarks/results/recipes.json)
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": F.gelu, "silu": F.silu, "relu": F.relu}


class ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int, depth: int = 2, activation: str = "gelu"):
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.conv1, self.norm1 = DiracConv(c_in, c_out), FrozenScaleBatchNorm(c_out)
        self.conv2, self.norm2 = DiracConv(c_out, c_out), FrozenScaleBatchNorm(c_out)
        self.conv3 = self.norm3 = None
        if depth == 3:
            self.conv3, self.norm3 = DiracConv(c_out, c_out), FrozenScaleBatchNorm(c_out)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        act = self.act
        x = act(self.norm1(self.pool(self.conv1(x))))
        if self.conv3 is None:
            return act(self.norm2(self.conv2(x)))
        skip = x
        x = act(self.norm2(self.conv2(x)))
        return act(self.norm3(self.conv3(x)) + skip)


class AirbenchNet(nn.Module):
    whitened: torch.Tensor  # a buffer: True once the stem is set from data

    def __init__(
        self, widths: list[int], num_classes: int = 10, depth: int = 2, dropout: float = 0.0, activation: str = "gelu"
    ):
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.normalize = Normalize()
        self.whiten = nn.Conv2d(3, WHITEN_CHANNELS, WHITEN_KERNEL, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.register_buffer("whitened", torch.zeros((), dtype=torch.bool))
        groups, c_in = [], WHITEN_CHANNELS
        for c_out in widths:
            groups.append(ConvGroup(c_in, c_out, depth, activation))
            c_in = c_out
        self.groups = nn.Sequential(*groups)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in, num_classes, bias=False)

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the stem from training images: float NCHW in [0, 1] or uint8 NHWC (a few thousand suffice)."""
        if images.dtype == torch.uint8:
            images = images.permute(0, 3, 1, 2).float().div(255)
        x = self.normalize(images.to(self.whiten.weight.device, torch.float32))
        k = WHITEN_KERNEL
        # (N, C, H-1, W-1, k, k) -> one row per patch, laid out as a conv filter (C, k, k).
        patches = x.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k)
        # float32 sums on the device; the 12x12 eigenproblem in float64 on the host (numpy): MPS has no
        # float64 and a GPU is slow at it, and the result is a handful of numbers.
        covariance = ((patches.T @ patches) / len(patches)).cpu().numpy().astype(np.float64)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        filters = (eigenvectors.T / np.sqrt(eigenvalues + eps)[:, None]).reshape(-1, 3, k, k)
        weight = torch.from_numpy(np.concatenate([filters, -filters]).astype(np.float32))
        self.whiten.weight.copy_(weight.to(self.whiten.weight.device, self.whiten.weight.dtype))
        self.whitened.fill_(True)

    # ---- what the trainer asks of a model that has them (train.py) ----------------------------------

    def init_from_data(self, images: torch.Tensor) -> None:
        """Before training: the whitening stem from the first WHITEN_IMAGES training images (uint8 NHWC)."""
        self.init_whitening(images[:WHITEN_IMAGES])

    def frozen_groups(self, epoch: int) -> set[str]:
        """The parameter groups (param_groups' names) that must not move in `epoch`: the trainer gives them a
        learning rate of 0. The parameters keep requires_grad, so neither a compiled graph nor DDP's reducer
        changes when the stem's bias freezes (one compilation for the whole run)."""
        return {"whitening_bias"} if epoch >= WHITEN_BIAS_EPOCHS else set()

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        return param_groups(self, lr, weight_decay, BIAS_LR_SCALE)

    def forward(self, x):
        x = self.act(F.conv2d(self.normalize(x), self.whiten.weight, self.whiten.bias))
        x = self.groups(x)
        # Max-pooling's backward routes the gradient by the argmax index. amax's compares the input with the
        # max; compiled under bf16/fp16 autocast, Inductor recomputes that input at higher precision than
        # the saved max, nothing compares equal, and the gradient is 0/0 = NaN everywhere (measured on an
        # H200: benchmarks/results/gpu_numerics.json).
        # The map is 3x3 here (32 px: 31 after the stem, then 15, 7, 3); a fixed kernel also exports to ONNX.
        x = F.max_pool2d(x, 3).flatten(1)
        return self.head(self.dropout(x)) * LOGIT_SCALE


def airbench(
    name: str, base_widths: list[int], depth: int, num_classes: int, width: float, dropout: float
) -> AirbenchNet:
    check_common(name, width, dropout)
    return AirbenchNet([scaled(c, width) for c in base_widths], num_classes, depth, dropout)


@register(
    "airbench94",
    "airbench94: whitening stem, 3 conv groups 64-256-256, GELU, max-pool head",
    batch_size=1024,
    recipe="fast",
)
def airbench94(num_classes: int = 10, width: float = 1.0, dropout: float = 0.0) -> AirbenchNet:
    return airbench("airbench94", [64, 256, 256], 2, num_classes, width, dropout)


@register(
    "airbench96",
    "airbench96: whitening stem, 3 residual conv groups of 3 convs, 128-512-512",
    batch_size=1024,
    recipe="fast96",
)
def airbench96(num_classes: int = 10, width: float = 1.0, dropout: float = 0.0) -> AirbenchNet:
    return airbench("airbench96", [128, 512, 512], 3, num_classes, width, dropout)


@register(
    "airbench-cpu",
    "airbench94 narrowed for CPUs: 16-96-192 channels, a fifth of its FLOPs",
    batch_size=512,
    recipe="fast",
)
def airbench_cpu(num_classes: int = 10, width: float = 1.0, dropout: float = 0.0) -> AirbenchNet:
    # Compared with the cpu preset's quarter-width airbench94 in benchmarks/README.md.
    return airbench("airbench-cpu", [16, 96, 192], 2, num_classes, width, dropout)


# --- the recipe's parts the trainer needs ---------------------------------------------------------


def param_groups(model: AirbenchNet, lr: float, weight_decay: float, bias_lr_scale: float = 64.0) -> list[dict]:
    """SGD parameter groups in airbench's form, each with a "name" and an "lr_scale" (the trainer sets
    group["lr"] = lr * group["lr_scale"] at every step):

        norm_biases     BatchNorm shifts: bias_lr_scale times the lr, the same decay per step
        whitening_bias  the stem's bias (learning rate 0 once `frozen_groups` names it)
        weights         everything else (conv filters, head)
    """
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad and n != "whiten.bias"]
    shifts = [p for n, p in trainable if ".norm" in n]
    whiten = [model.whiten.bias]
    others = [p for n, p in trainable if ".norm" not in n]

    def group(name, params, scale):
        return {
            "name": name,
            "params": params,
            "lr": lr * scale,
            "lr_scale": scale,
            "weight_decay": weight_decay / scale,
        }

    return [
        group("norm_biases", shifts, bias_lr_scale),
        group("whitening_bias", whiten, 1.0),
        group("weights", others, 1.0),
    ]
