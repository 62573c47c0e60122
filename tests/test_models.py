import urllib.error

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kagglecifar import models
from kagglecifar.errors import KaggleCifarError
from kagglecifar.models import create_model, model_info, model_names

WEIGHTS_FILE = "resnet50-11ad3fa6.pth"  # torchvision's ResNet50_Weights.IMAGENET1K_V2
SMALL_IMAGENET = {"weights": None, "image_size": 64}  # random weights, small upsampling: fast on a CPU
SMALL = {"resnet50-imagenet": SMALL_IMAGENET, "resnet34": {"width": 0.5}, "resnet50": {"width": 0.5}}
CIFAR_NETS = [name for name in model_names() if name != "resnet50-imagenet"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def conv_channels(model):
    return {m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)}


@pytest.mark.parametrize("name", model_names())
def test_forward_backward_and_state_dict_round_trip(name):
    torch.manual_seed(0)
    model = create_model(name, **SMALL.get(name, {})).train()
    x = torch.rand(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    F.cross_entropy(out, torch.tensor([3, 7])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0

    # What predict does with a checkpoint: rebuild by name, load the weights, get the same outputs.
    twin = create_model(name, **SMALL.get(name, {}))
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), twin.eval()(x), atol=1e-5)


def test_num_classes_sets_the_output_size():
    assert create_model("simplecnn", num_classes=7)(torch.rand(3, 3, 32, 32)).shape == (3, 7)


@pytest.mark.parametrize("name", CIFAR_NETS)
def test_width_scales_parameters(name):
    full, half = model_info(name)["params"], model_info(name, width=0.5)["params"]
    if name == "mlp":  # only the hidden layer scales: linear in width
        assert 0.49 < half / full < 0.51
    else:  # convolutions scale with in x out channels: about a quarter
        assert 0.23 < half / full < 0.28


def test_width_rounds_resnet_channels_to_multiples_of_8():
    assert conv_channels(create_model("resnet18", width=0.25)) == {16, 32, 64, 128}
    assert conv_channels(create_model("resnet50", width=0.25)) == {16, 32, 64, 128, 256, 512}


def test_width_scales_flops():
    full, quarter = model_info("resnet18")["flops"], model_info("resnet18", width=0.25)["flops"]
    assert 0.055 < quarter / full < 0.07


def test_resnet18_slim_is_under_5m_parameters_at_its_exact_widths():
    model = create_model("resnet18-slim")
    assert conv_channels(model) == {42, 84, 168, 336}
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    assert any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


def test_zero_init_residual_makes_blocks_start_as_identity():
    torch.manual_seed(0)
    for name in ("resnet18", "resnet50", "preact-resnet18"):
        block = create_model(name, width=0.25).stages[0][0]
        h = torch.randn(2, block.branch[0].in_channels, 8, 8)
        assert torch.count_nonzero(block.branch(h)) == 0, name
        plain = create_model(name, width=0.25, zero_init_residual=False).stages[0][0]
        assert torch.count_nonzero(plain.branch(h)) > 0, name


def test_freeze_stages_freezes_stem_and_first_stages_and_their_batchnorm_and_upsamples():
    torch.manual_seed(0)
    model = create_model("resnet50-imagenet", freeze_stages=2, **SMALL_IMAGENET)
    frozen = [model.stem, model.stages[0], model.stages[1]]
    trainable = [model.stages[2], model.stages[3], model.head]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for m in trainable for p in m.parameters())

    model.train()
    assert all(not bn.training for m in frozen for bn in m.modules() if isinstance(bn, nn.BatchNorm2d))
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    stem_out = []
    model.stem.register_forward_hook(lambda module, args, out: stem_out.append(out.shape))
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    assert stem_out == [(2, 64, 16, 16)]  # upsampled to 64 px inside the model, then the /4 ImageNet stem
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("stages.2", "stages.3")) for k in changed)
    assert all(p.grad is None for m in frozen for p in m.parameters())


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "hub" / "checkpoints"


def test_missing_imagenet_weights_without_network_is_a_clear_error(empty_torch_home, monkeypatch):
    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(KaggleCifarError) as err:
        create_model("resnet50-imagenet")
    message = str(err.value)
    assert WEIGHTS_FILE in message and str(empty_torch_home) in message
    assert f"https://download.pytorch.org/models/{WEIGHTS_FILE}" in message
    assert "\n" not in message
    assert list(empty_torch_home.iterdir()) == []


def test_imagenet_weights_are_read_from_the_torch_cache(empty_torch_home, monkeypatch):
    from torchvision.models import resnet50

    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("tried to download"))
    empty_torch_home.mkdir(parents=True)
    torch.manual_seed(1)
    reference = resnet50(weights=None)
    torch.save(reference.state_dict(), empty_torch_home / WEIGHTS_FILE)
    model = create_model("resnet50-imagenet")
    assert torch.equal(model.stages[3][2].conv3.weight, reference.layer4[2].conv3.weight)
    assert model.head[-1].out_features == 10

    (empty_torch_home / WEIGHTS_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(KaggleCifarError, match="unreadable ImageNet weights"):
        create_model("resnet50-imagenet")


@pytest.mark.parametrize(
    "name, kwargs, problem",
    [
        ("resnet19", {}, "unknown model 'resnet19'"),
        ("resnet18", {"depth": 3}, "takes no option depth"),
        ("mlp", {"zero_init_residual": True}, "takes no option zero_init_residual"),
        ("resnet18", {"width": 0}, "width must be positive"),
        ("simplecnn", {"dropout": 1.0}, "dropout must be in"),
        ("resnet50-imagenet", {"weights": None, "width": 0.5}, "width must be 1"),
        ("resnet50-imagenet", {"weights": "cifar"}, "weights must be"),
        ("resnet50-imagenet", {"weights": None, "freeze_stages": 5}, "freeze_stages must be 0..4"),
    ],
)
def test_bad_model_or_option_is_a_clear_error(name, kwargs, problem):
    with pytest.raises(KaggleCifarError, match=problem):
        create_model(name, **kwargs)


def test_small_resnet_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = create_model("resnet18", width=0.125).train()
    x, y = torch.rand(16, 3, 32, 32), torch.randint(0, 10, (16,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    with torch.no_grad():
        assert (model.eval()(x).argmax(1) == y).all()


def test_models_command_lists_every_model_at_the_width_asked(run_cli):
    code, out, err = run_cli("models", "--width", "0.25")
    assert code == 0, err
    lines = out.splitlines()
    listed = [line.split()[0] for line in lines[1:-1]]
    assert listed[: len(model_names())] == model_names()
    assert listed[len(model_names()) :] and all(name.startswith("timm/") for name in listed[len(model_names()) :])
    assert lines[-1].startswith(f"{len(model_names())} models at width 0.25")
    row = next(line for line in lines if line.startswith("resnet18 "))
    assert f" {model_info('resnet18', width=0.25)['params'] / 1e6:.2f}M " in row
    assert f" {model_info('resnet18')['params'] / 1e6:.2f}M " not in row

    code, out, err = run_cli("models", "--width", "-1")
    assert code == 1 and "width must be positive" in err and out == ""


def test_default_batch_sizes_are_positive():
    assert all(models.default_batch_size(name) > 0 for name in model_names())
    assert models.default_batch_size("resnet50-imagenet") < models.default_batch_size("resnet18")
