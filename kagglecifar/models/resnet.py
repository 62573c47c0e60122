"""CIFAR ResNets (the kuangliu/pytorch-cifar layout): 3x3 stem, no max-pool, four stages at 32/16/8/4 px.

`width` scales every stage's channels (rounded to a multiple of 8), so any of them can be made small
enough for a CPU. zero_init_residual starts each residual branch at zero (its last BN gamma, or its
last conv in the pre-activation blocks, which end without a BN): every block begins as the identity,
which trains faster and better at large batch sizes (Goyal et al. 2017).
"""

from __future__ import annotations

from torch import nn

from kagglecifar.models.layers import Normalize, check_common, scaled
from kagglecifar.models.registry import register


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out)]


def shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(*conv_bn(c_in, c_out, 1, stride))


class Residual(nn.Module):
    """relu(branch(x) + shortcut(x)): the post-activation block, basic or bottleneck by its branch."""

    def __init__(self, branch: nn.Sequential, skip: nn.Module):
        super().__init__()
        self.branch, self.shortcut = branch, skip

    def forward(self, x):
        return (self.branch(x) + self.shortcut(x)).relu()


def basic_block(c_in: int, c_mid: int, stride: int) -> Residual:
    branch = nn.Sequential(*conv_bn(c_in, c_mid, 3, stride), nn.ReLU(inplace=True), *conv_bn(c_mid, c_mid, 3))
    return Residual(branch, shortcut(c_in, c_mid, stride))


def bottleneck(c_in: int, c_mid: int, stride: int) -> Residual:
    c_out = c_mid * EXPANSION[bottleneck]
    branch = nn.Sequential(
        *conv_bn(c_in, c_mid, 1),
        nn.ReLU(inplace=True),
        *conv_bn(c_mid, c_mid, 3, stride),
        nn.ReLU(inplace=True),
        *conv_bn(c_mid, c_out, 1),
    )
    return Residual(branch, shortcut(c_in, c_out, stride))


class PreActBlock(nn.Module):
    """BN-ReLU-conv twice (He et al. 2016); the shortcut projection sees the pre-activated input."""

    def __init__(self, c_in: int, c_mid: int, stride: int):
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(inplace=True))
        self.branch = nn.Sequential(
            nn.Conv2d(c_in, c_mid, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_mid, c_mid, 3, 1, 1, bias=False),
        )
        self.projection = None if stride == 1 and c_in == c_mid else nn.Conv2d(c_in, c_mid, 1, stride, bias=False)

    def forward(self, x):
        out = self.pre(x)
        skip = x if self.projection is None else self.projection(out)
        return self.branch(out) + skip


EXPANSION = {basic_block: 1, bottleneck: 4, PreActBlock: 1}  # block's output channels / its width


class CifarResNet(nn.Module):
    def __init__(
        self,
        block,
        blocks_per_stage: list[int],
        widths: list[int],
        num_classes: int,
        dropout: float,
        zero_init_residual: bool,
    ):
        super().__init__()
        preact = block is PreActBlock
        stem: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)]
        if not preact:
            stem += [nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(Normalize(), *stem)
        stages, c_in = [], widths[0]
        for i, (n, c_mid) in enumerate(zip(blocks_per_stage, widths)):
            layers = []
            for j in range(n):
                layers.append(block(c_in, c_mid, stride=2 if i > 0 and j == 0 else 1))
                c_in = c_mid * EXPANSION[block]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        # Pre-activation nets end with the BN-ReLU their last block leaves out.
        final = [nn.BatchNorm2d(c_in), nn.ReLU(inplace=True)] if preact else []
        self.head = nn.Sequential(
            *final, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, num_classes)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (Residual, PreActBlock)):
                    last = m.branch[-1]  # the branch's last BatchNorm (its conv in a pre-activation block)
                    assert isinstance(last, (nn.BatchNorm2d, nn.Conv2d))
                    nn.init.zeros_(last.weight)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


def cifar_resnet(name, block, blocks_per_stage, base_widths, num_classes, width, dropout, zero_init_residual):
    check_common(name, width, dropout)
    widths = [scaled(c, width) for c in base_widths]
    return CifarResNet(block, blocks_per_stage, widths, num_classes, dropout, zero_init_residual)


WIDTHS = [64, 128, 256, 512]


@register("resnet18", "ResNet-18, CIFAR layout (basic blocks 2-2-2-2, 64-512 channels)")
def resnet18(num_classes: int = 10, width: float = 1.0, dropout: float = 0.0, zero_init_residual: bool = True):
    return cifar_resnet("resnet18", basic_block, [2, 2, 2, 2], WIDTHS, num_classes, width, dropout, zero_init_residual)


@register("resnet34", "ResNet-34, CIFAR layout (basic blocks 3-4-6-3)")
def resnet34(num_classes: int = 10, width: float = 1.0, dropout: float = 0.0, zero_init_residual: bool = True):
    return cifar_resnet("resnet34", basic_block, [3, 4, 6, 3], WIDTHS, num_classes, width, dropout, zero_init_residual)


@register("resnet50", "ResNet-50, CIFAR layout (bottleneck blocks 3-4-6-3, 256-2048 channels out)")
def resnet50(num_classes: int = 10, width: float = 1.0, dropout: float = 0.0, zero_init_residual: bool = True):
    return cifar_resnet("resnet50", bottleneck, [3, 4, 6, 3], WIDTHS, num_classes, width, dropout, zero_init_residual)


@register("preact-resnet18", "pre-activation ResNet-18, CIFAR layout")
def preact_resnet18(num_classes: int = 10, width: float = 1.0, dropout: float = 0.0, zero_init_residual: bool = True):
    return cifar_resnet(
        "preact-resnet18", PreActBlock, [2, 2, 2, 2], WIDTHS, num_classes, width, dropout, zero_init_residual
    )


@register("resnet18-slim", "ResNet-18 at 42-84-168-336 channels, dropout 0.2 before the classifier")
def resnet18_slim(num_classes: int = 10, width: float = 1.0, dropout: float = 0.2, zero_init_residual: bool = True):
    return cifar_resnet(
        "resnet18-slim", basic_block, [2, 2, 2, 2], [42, 84, 168, 336], num_classes, width, dropout, zero_init_residual
    )
