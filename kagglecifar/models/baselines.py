"""Baselines people compare against: a tiny MLP and the classic Keras-tutorial CNN."""
from torch import nn

from kagglecifar.models import Normalize, register


@register("mlp", "flatten, dense 64, dense 10")
def mlp(num_classes: int = 10, **_) -> nn.Module:
    return nn.Sequential(Normalize(), nn.Flatten(), nn.Linear(32 * 32 * 3, 64), nn.ReLU(inplace=True),
                         nn.Linear(64, num_classes))
