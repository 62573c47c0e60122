"""Baselines people compare against: a tiny MLP and the classic Keras-tutorial CNN."""

from torch import nn

from kagglecifar.models.layers import Normalize, check_common, scaled
from kagglecifar.models.registry import register


@register("mlp", "flatten, dense 64, dense 10", batch_size=256, recipe="baseline")
def mlp(num_classes: int = 10, width: float = 1.0, dropout: float = 0.0) -> nn.Module:
    check_common("mlp", width, dropout)
    hidden = scaled(64, width)
    return nn.Sequential(
        Normalize(),
        nn.Flatten(),
        nn.Linear(32 * 32 * 3, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


@register(
    "simplecnn",
    "Keras tutorial CNN: conv32-pool-conv64-pool-conv64, dense 64, dense 10",
    batch_size=256,
    recipe="baseline",
)
def simplecnn(num_classes: int = 10, width: float = 1.0, dropout: float = 0.0) -> nn.Module:
    check_common("simplecnn", width, dropout)
    c1, c2, hidden = scaled(32, width), scaled(64, width), scaled(64, width)
    # Unpadded 3x3 convolutions as in the tutorial: 32 -> 30 -> 15 -> 13 -> 6 -> 4.
    return nn.Sequential(
        Normalize(),
        nn.Conv2d(3, c1, 3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(c2, c2, 3),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(c2 * 4 * 4, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )
