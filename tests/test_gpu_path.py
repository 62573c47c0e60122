"""What the GPU path needs that a CPU can check: no float64 tensor anywhere in training or prediction (MPS has
none, GPUs are slow at it) and one compilation for a whole compiled airbench run."""

import albumentations as A
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from kagglecifar import device as device_policy
from kagglecifar import rundir
from kagglecifar.checkpoint import load_model
from kagglecifar.data.batch_augment import compile_pipeline
from kagglecifar.inference.batches import default_batch_size
from kagglecifar.inference.predict import predict_images
from kagglecifar.training.lookahead import Lookahead
from kagglecifar.training.train import train
from tests.test_train import make_cache, small_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

AIRBENCH = dict(
    model="airbench-cpu",
    width=0.25,
    batch_size=32,
    lr=0.5,
    momentum=0.85,
    schedule="triangle",
    weight_decay=0.00133,
    label_smoothing=0.2,
    lookahead=True,
    alternate_flip=True,
    augment="cutout",
)


class Float64Ops(TorchDispatchMode):
    """Records every op that takes or makes a float64 tensor."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in tree_leaves((args, kwargs, out))):
            self.ops.append(str(func))
        return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("data"), count=120)


def test_training_set_up_steps_and_sums_make_no_float64_tensor(data_dir, tmp_path):
    config = small_config(data_dir, tmp_path, epochs=1, **AIRBENCH)  # whitening, lookahead, batched cutout
    with Float64Ops() as traced:
        result = train(config)
    assert result.epochs_run == 1
    assert traced.ops == []


def test_batched_augmentation_makes_no_float64_tensor():
    pipeline = A.Compose(
        [
            A.Pad(padding=4, border_mode=4),
            A.RandomCrop(32, 32),
            A.HorizontalFlip(),
            A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0, p=1),
            A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(4, 8), hole_width_range=(4, 8), p=1),
        ]
    )
    engine = compile_pipeline(pipeline)
    assert not isinstance(engine, str), engine
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), np.uint8))
    with Float64Ops() as traced:
        out = engine(images, (0, 1, 2))
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert traced.ops == []


def test_a_predict_batch_makes_no_float64_tensor(data_dir, tmp_path):
    run = train(small_config(data_dir, tmp_path, epochs=1, **AIRBENCH)).run_dir
    model, _ = load_model(run / "best.pt", torch.device("cpu"))
    images = np.random.default_rng(1).integers(0, 256, (10, 32, 32, 3), np.uint8)
    with Float64Ops() as traced:
        probs = predict_images([(model, 1.0)], images, ["none", "shift"], 10, batch_size=4, progress=False)
    assert np.allclose(probs["shift"].sum(1), 1, atol=1e-5)
    assert traced.ops == []


def test_a_compiled_airbench_run_compiles_once_over_five_epochs(data_dir, tmp_path, monkeypatch):
    """The stem's bias freezes after WHITEN_BIAS_EPOCHS (3): that must not recompile."""
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: compile_(model, backend=counter))
    monkeypatch.setattr(device_policy, "cxx_compiler", lambda: "/usr/bin/c++")  # the plan allows compile
    torch._dynamo.reset()
    config = small_config(data_dir, tmp_path, epochs=5, compile=True, **AIRBENCH)
    result = train(config)
    assert result.epochs_run == 5
    assert counter.frame_count == 1, f"{counter.frame_count} compilations"
    torch._dynamo.reset()


def test_without_a_compiler_compile_trains_eagerly_and_says_so(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(device_policy, "cxx_compiler", lambda: None)

    def refuse(*args, **kwargs):
        raise AssertionError("torch.compile called without a compiler")

    monkeypatch.setattr(torch, "compile", refuse)
    result = train(small_config(data_dir, tmp_path, epochs=1, compile=True, **AIRBENCH))
    assert result.epochs_run == 1
    first = capsys.readouterr().err.strip().splitlines()[0]
    assert first.startswith("device cpu (CPU): fp32, eager: no C++ compiler found"), first


def test_speed_recipes_validate_after_the_last_epoch_only(data_dir, tmp_path):
    run = train(small_config(data_dir, tmp_path, epochs=3, val_every=0)).run_dir
    rows = rundir.read_metrics(run)
    assert [row["val_acc"] is None for row in rows] == [True, True, False]
    assert all(0 < row["train_seconds"] <= row["seconds"] for row in rows)
    every_two = rundir.read_metrics(train(small_config(data_dir, tmp_path, epochs=3, val_every=2)).run_dir)
    assert [row["val_acc"] is None for row in every_two] == [True, False, False]


def test_lookahead_updates_all_tensors_with_multi_tensor_kernels(monkeypatch):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    lookahead = Lookahead(model, every=1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    expected = {k: v.clone().lerp_(model.state_dict()[k], 0.25) for k, v in lookahead.slow.items()}
    calls = []
    lerp = torch._foreach_lerp_
    monkeypatch.setattr(torch, "_foreach_lerp_", lambda *args: calls.append(len(args[0])) or lerp(*args))
    lookahead.update(0.75)
    assert calls == [len(expected)]  # one multi-tensor call, not one per tensor
    for key, value in expected.items():
        assert torch.allclose(lookahead.slow[key], value) and torch.equal(model.state_dict()[key], value), key


def test_predictions_come_back_once_per_batch_not_once_per_view(monkeypatch):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)).eval()
    images = np.random.default_rng(2).integers(0, 256, (10, 32, 32, 3), np.uint8)
    expected = predict_images([(model, 1.0)], images, ["shift"], 10, batch_size=4, progress=False)["shift"]
    copies = []
    to_cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: copies.append(self.shape) or to_cpu(self, *a, **k))
    probs = predict_images([(model, 1.0)], images, ["none", "shift"], 10, batch_size=4, progress=False)
    assert len(copies) == 3  # 3 batches, 11 views each, both modes in one copy
    assert np.allclose(probs["shift"], expected, atol=1e-6)


def test_the_default_prediction_batch_fits_the_model_and_the_free_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (14 * 2**30, 16 * 2**30))
    cuda = torch.device("cuda", 0)
    big = torch.nn.Linear(1, 1)
    big.image_size = 224  # resnet50-imagenet upsamples to 224 px
    assert default_batch_size(cuda, [torch.nn.Linear(1, 1)]) == 1024
    assert default_batch_size(cuda, [big]) == 64
    assert default_batch_size(torch.device("cpu"), [torch.nn.Linear(1, 1)]) == 1024
    assert default_batch_size(torch.device("cpu"), [big]) == 16  # 1024 x (32/224)^2, to a power of two
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**30, 16 * 2**30))  # a busy card
    assert default_batch_size(cuda, [torch.nn.Linear(1, 1)]) == 256
