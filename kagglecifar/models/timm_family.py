"""timm/NAME: any model timm knows (`timm.list_models()`, optionally with a pretrained tag, NAME.TAG), fine-tuned.

    create_model("timm/vit_base_patch16_224.augreg_in21k_ft_in1k", num_classes=10, pretrained="hub")

The model keeps the package's input contract (float NCHW in [0, 1]): it normalises with the backbone's own
mean and std (timm's pretrained_cfg) and upsamples on the device to image_size (default: the size the backbone
was pretrained at). Weights: pretrained="hub" (the Hugging Face cache, downloaded when allowed), "none", or a
file path (timm_weights.py); the classifier is always new, for the dataset's classes.

Stages are timm's coarse parameter groups (group_matcher): the stem, then each stage (ResNet layers, ViT
blocks, ...), then the final norm and classifier. freeze_stages=k freezes the stem and stages 1..k (learning
rate 0 through frozen_groups; their BatchNorm layers stay in eval mode, keeping the pretrained statistics);
unfreeze_epoch=E trains them again
from epoch E+1. transfer_param_groups gives the optimizer the backbone/head learning-rate split and
layer-wise decay.
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import Any

from torch import nn

from kagglecifar.errors import KaggleCifarError
from kagglecifar.models.layers import Normalize, check_common, resized
from kagglecifar.models.registry import register_prefix
from kagglecifar.models.timm_weights import hub_weights_file, load_into, read_weights

PREFIX = "timm/"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEADS = ("linear", "mlp")
FROZEN_GROUP = "frozen_stages"  # the optimizer groups of the frozen stages (learning rate 0 while frozen)
MLP_HIDDEN = 256
MLP_DROPOUT = 0.25  # the users' reports: pooled features, dropout 0.25, 256 units with BatchNorm, classifier
RECOMMENDED = {
    "timm/vit_base_patch16_224.augreg_in21k_ft_in1k": "ViT-B/16, ImageNet-21k then 1k (the transfer preset)",
    "timm/vit_small_patch16_224.augreg_in21k_ft_in1k": "ViT-S/16, ImageNet-21k then 1k",
    "timm/convnext_tiny.fb_in22k_ft_in1k": "ConvNeXt-T, ImageNet-22k then 1k",
    "timm/resnet50.tv2_in1k": "ResNet-50, torchvision's ImageNet weights (those of resnet50-imagenet)",
    "timm/efficientnet_b0.ra_in1k": "EfficientNet-B0, ImageNet",
    "timm/resnet10t.c3_in1k": "ResNet-10-T, ImageNet: small, for trying a recipe on a CPU",
}


@functools.cache
def check_name(rest: str) -> None:
    """One line for a name timm does not know, with the closest names it does."""
    import timm
    from timm.models import split_model_name_tag

    arch, tag = split_model_name_tag(rest)
    if not arch or not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise KaggleCifarError(
            f"unknown model {PREFIX + rest!r}: timm has no model {arch!r}{hint} (timm.list_models() lists them)"
        )
    if tag and rest not in timm.list_pretrained(f"{arch}.*"):
        tags = [name.split(".", 1)[1] for name in timm.list_pretrained(f"{arch}.*")]
        raise KaggleCifarError(
            f"unknown model {PREFIX + rest!r}: timm has no pretrained tag {tag!r} for {arch}"
            + (f"; its tags: {', '.join(tags)}" if tags else "; it has no pretrained weights")
        )


def pretrained_size(rest: str) -> int:
    """The image size the backbone was pretrained at (timm's pretrained_cfg; 224 when it says nothing)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(rest)
    return int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else 224


def _listed() -> dict[str, str]:
    return {name: f"{pretrained_size(name[len(PREFIX) :])} px: {text}" for name, text in RECOMMENDED.items()}


class TimmModel(nn.Module):
    backbone: Any  # a timm model: pretrained_cfg, get_classifier, group_matcher, ...

    def __init__(self, backbone: Any, head: nn.Module, image_size: int, freeze_stages: int, unfreeze_epoch: int):
        super().__init__()
        cfg = backbone.pretrained_cfg  # timm gives every model one; ImageNet's statistics when it says nothing
        self.normalize = Normalize(tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)))
        self.backbone, self.head, self.image_size = backbone, head, image_size
        self.freeze_stages, self.unfreeze_epoch = freeze_stages, unfreeze_epoch
        self.loaded_weights = ""  # the line that says what was loaded (the trainer prints it)
        classifier = {id(p) for p in backbone.get_classifier().parameters()}
        stage = stage_ids(backbone, coarse=True) if freeze_stages else {}
        self.frozen_names = [
            name
            for name, p in backbone.named_parameters()
            if stage.get(name, freeze_stages + 1) <= freeze_stages and id(p) not in classifier
        ]
        frozen = set(self.frozen_names)
        self.frozen_norms = [
            m
            for name, m in backbone.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and f"{name}.weight" in frozen
        ]
        self.frozen_now = bool(self.frozen_names)

    def frozen_groups(self, epoch: int) -> set[str]:
        """Called by the trainer before each epoch (0-based), after train(): the optimizer groups that must not
        move (learning rate 0). The frozen stages stay so until unfreeze_epoch; their parameters keep
        requires_grad, so neither a compiled graph nor DDP's reducer changes when they start to train."""
        self.frozen_now = bool(self.frozen_names) and not (self.unfreeze_epoch and epoch >= self.unfreeze_epoch)
        self.train(self.training)
        return {FROZEN_GROUP} if self.frozen_now else set()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_now:  # frozen BatchNorm keeps its pretrained running statistics
            for module in self.frozen_norms:
                module.eval()
        return self

    def forward(self, x):
        x = resized(self.normalize(x), self.image_size)
        return self.head(self.backbone(x))

    def transfer_param_groups(self, weight_decay: float, backbone_lr_scale: float, layer_decay: float) -> list[dict]:
        """Optimizer groups (the frozen stages' named FROZEN_GROUP, so unfreezing needs no new optimizer): the head
        at the scheduled rate, the backbone at backbone_lr_scale times it, each layer a further layer_decay^depth
        (timm's fine-grained groups, counted from the head); no weight decay on norms, biases and embeddings."""
        head = {id(p) for p in [*self.backbone.get_classifier().parameters(), *self.head.parameters()]}
        if layer_decay != 1 and not count_stages(self.backbone):
            raise KaggleCifarError(f"--layer-decay {layer_decay}: this timm model defines no layers to decay over")
        layer = stage_ids(self.backbone, coarse=False) if layer_decay != 1 else {}
        last = max(layer.values(), default=0)
        no_decay = set(getattr(self.backbone, "no_weight_decay", lambda: set())())
        named = [(f"backbone.{n}", n, p) for n, p in self.backbone.named_parameters()]
        named += [(f"head.{n}", n, p) for n, p in self.head.named_parameters()]
        frozen = set(self.frozen_names)
        groups: dict[tuple[str, float, float], list] = {}
        for full, name, p in named:
            scale = 1.0 if id(p) in head else backbone_lr_scale * layer_decay ** (last - layer.get(name, last))
            decay = 0.0 if p.ndim <= 1 or name in no_decay else weight_decay
            frozen_here = full.startswith("backbone.") and name in frozen
            groups.setdefault((FROZEN_GROUP if frozen_here else "trained", scale, decay), []).append(p)
        return [{"name": n, "params": ps, "lr_scale": s, "weight_decay": d} for (n, s, d), ps in sorted(groups.items())]


def stage_ids(backbone: Any, coarse: bool) -> dict[str, int]:
    """Parameter name -> group number in timm's order (0: the stem), from the family's group_matcher."""
    from timm.models import group_parameters

    groups = group_parameters(backbone, backbone.group_matcher(coarse=coarse))
    return {name: i for i, (_, names) in enumerate(sorted(groups.items())) for name in names}


def count_stages(backbone: Any) -> int:
    """Stages between the stem and the head group (0 when the family defines no groups)."""
    try:
        return max(stage_ids(backbone, coarse=True).values()) - 1
    except (AttributeError, NotImplementedError, ValueError):
        return 0


@register_prefix(
    PREFIX,
    check_name,
    "any timm model: timm/NAME or timm/NAME.TAG (timm.list_models())",
    batch_size=128,
    listed=_listed,
    recipe="transfer",
)
def timm_model(
    arch: str,
    num_classes: int = 10,
    width: float = 1.0,
    dropout: float = 0.0,
    pretrained: str = "hub",
    image_size: int | None = None,
    freeze_stages: int = 0,
    unfreeze_epoch: int = 0,
    head: str = "linear",
    head_dropout: float | None = None,
) -> nn.Module:
    import timm

    name = f"model {PREFIX + arch!r}"
    check_common(PREFIX + arch, width, dropout)
    if width != 1:
        raise KaggleCifarError(f"{name}: width must be 1 (the pretrained weights fix its channels), got {width}")
    if head not in HEADS:
        raise KaggleCifarError(f"{name}: head must be linear or mlp, got {head!r}")
    if head_dropout is not None and head != "mlp":
        raise KaggleCifarError(f"{name}: head_dropout applies to the mlp head (--head mlp) only")
    if head_dropout is not None and not 0 <= head_dropout < 1:
        raise KaggleCifarError(f"{name}: head_dropout must be in [0, 1), got {head_dropout}")
    if image_size is not None and not 16 <= image_size <= 1024:
        raise KaggleCifarError(f"{name}: image_size must be in 16..1024, got {image_size}")
    if freeze_stages < 0 or unfreeze_epoch < 0:
        raise KaggleCifarError(f"{name}: freeze_stages and unfreeze_epoch must be 0 or more")
    # Weights before building: a missing file or an offline hub fails before anything slow.
    if pretrained == "hub":
        path, hub_id = hub_weights_file(arch)
        state, source = read_weights(path), f"the Hugging Face hub's {hub_id} ({path})"
    elif pretrained == "none":
        state, source = None, ""
    else:
        state, source = read_weights(Path(pretrained)), pretrained
    size = image_size or pretrained_size(arch)
    kwargs: dict[str, Any] = {
        "pretrained": False,
        "num_classes": num_classes if head == "linear" else 0,
        "drop_rate": dropout,
    }
    backbone: Any
    try:  # ViTs and other fixed-grid models are built for the size (position embeddings resampled on load)
        backbone = timm.create_model(arch, img_size=size, **kwargs) if size != pretrained_size(arch) else None
    except TypeError:  # convolutional: any size
        backbone = None
    backbone = backbone or timm.create_model(arch, **kwargs)
    stages = count_stages(backbone)
    if freeze_stages > stages:
        raise KaggleCifarError(f"{name}: freeze_stages must be 0..{stages} (its stages), got {freeze_stages}")
    if head == "mlp":
        features = backbone.num_features
        head_module: nn.Module = nn.Sequential(
            nn.Dropout(MLP_DROPOUT if head_dropout is None else head_dropout),
            nn.Linear(features, MLP_HIDDEN),
            nn.BatchNorm1d(MLP_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Linear(MLP_HIDDEN, num_classes),
        )
    else:
        head_module = nn.Identity()
    model = TimmModel(backbone, head_module, size, freeze_stages, unfreeze_epoch)
    if state is not None:
        model.loaded_weights = load_into(backbone, state, source, arch)
        if head == "mlp":
            model.loaded_weights += f"; new mlp head ({MLP_HIDDEN} hidden units)"
    return model
