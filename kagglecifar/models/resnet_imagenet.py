"""Transfer learning: torchvision's ResNet-50 with ImageNet weights, fed upsampled CIFAR images.

freeze_stages=k (0-4) freezes the stem and stages 1..k: their weights get no gradient and their
BatchNorm layers stay in eval mode even while the model trains, so their running statistics keep the
ImageNet values. freeze_stages=0 fine-tunes everything.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from kagglecifar.errors import KaggleCifarError
from kagglecifar.models.layers import Normalize, check_common, resized
from kagglecifar.models.registry import register

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS = ("imagenet", None)


def imagenet_state_dict() -> dict:
    """torchvision's ImageNet ResNet-50 weights from the torch hub cache, downloading them if absent."""
    from torchvision.models import ResNet50_Weights

    url = ResNet50_Weights.IMAGENET1K_V2.url
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / Path(urlparse(url).path).name
    if not path.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            digest = torch.hub.HASH_REGEX.search(path.name)
            torch.hub.download_url_to_file(url, str(path), digest.group(1) if digest else None, progress=True)
        except Exception as exc:  # no network, proxy, disk, hash mismatch: the fix is the same
            raise KaggleCifarError(
                f"resnet50-imagenet: ImageNet weights {path.name} are not in {folder} and the download failed "
                f"({type(exc).__name__}: {' '.join(str(exc).split())}); download {url} and place it at {path} "
                "(or set TORCH_HOME), or pass weights=None to train from scratch"
            ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise KaggleCifarError(
            f"{path}: unreadable ImageNet weights ({type(exc).__name__}); delete it and download {url} again"
        ) from None


class ImageNetResNet50(nn.Module):
    def __init__(self, num_classes: int, dropout: float, image_size: int, weights: str | None, freeze_stages: int):
        super().__init__()
        from torchvision.models import resnet50 as torchvision_resnet50

        state_dict = imagenet_state_dict() if weights == "imagenet" else None  # before building: fail fast
        net = torchvision_resnet50(weights=None)
        if state_dict is not None:
            net.load_state_dict(state_dict)
        self.image_size = image_size
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(net.fc.in_features, num_classes)
        )
        self.freeze_stages = freeze_stages
        for module in self.frozen_modules():
            module.requires_grad_(False)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.stem, *self.stages[: self.freeze_stages]] if self.freeze_stages else []

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def forward(self, x):
        x = resized(self.normalize(x), self.image_size)
        return self.head(self.stages(self.stem(x)))


@register(
    "resnet50-imagenet",
    "torchvision ResNet-50 with ImageNet weights, images upsampled to 224 px",
    batch_size=128,
    recipe="transfer-resnet50",
)
def resnet50_imagenet(
    num_classes: int = 10,
    width: float = 1.0,
    dropout: float = 0.0,
    weights: str | None = "imagenet",
    image_size: int = 224,
    freeze_stages: int = 0,
) -> nn.Module:
    check_common("resnet50-imagenet", width, dropout)
    if width != 1:
        raise KaggleCifarError(
            f"model 'resnet50-imagenet': width must be 1 (the ImageNet weights fix its channels), got {width}"
        )
    if weights not in WEIGHTS:
        raise KaggleCifarError(f"model 'resnet50-imagenet': weights must be 'imagenet' or None, got {weights!r}")
    if not 32 <= image_size <= 1024:
        raise KaggleCifarError(f"model 'resnet50-imagenet': image_size must be in 32..1024, got {image_size}")
    if freeze_stages not in range(5):
        raise KaggleCifarError(f"model 'resnet50-imagenet': freeze_stages must be 0..4, got {freeze_stages}")
    return ImageNetResNet50(num_classes, dropout, image_size, weights, freeze_stages)
