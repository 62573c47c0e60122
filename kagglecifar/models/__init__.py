"""Models: a registry (registry.py), shared layers and the input contract (layers.py), one file per family.

    create_model("resnet18", num_classes=10, width=0.25)   -> nn.Module taking float NCHW in [0, 1]

Every model normalises its input itself (first layer), so training and prediction only ever hand it
images scaled to [0, 1] (to_model_input). Adding a model = one small file that calls @register, plus its
import below.
"""

# Importing a family module registers its models.
from kagglecifar.models import airbench, baselines, resnet, resnet_imagenet  # noqa: E402,F401
from kagglecifar.models.layers import CIFAR_MEAN, CIFAR_STD, Normalize, check_common, scaled, to_model_input  # noqa: F401
from kagglecifar.models.registry import (  # noqa: F401
    create_model,
    default_batch_size,
    describe,
    model_info,
    model_names,
    model_options,
    model_table,
    recipe_preset,
    register,
)
