"""The airbench family and the parts of its recipe: whitening stem, checkpoint round trip, parameter groups,
Lookahead, Muon for conv filters, the translate TTA views."""

import copy

import pytest
import torch
import torch.nn.functional as F

from kagglecifar.models import create_model
from kagglecifar.models.airbench import WHITEN_BIAS_EPOCHS, param_groups
from kagglecifar.training.lookahead import Lookahead, lookahead_decay
from kagglecifar.training.muon import Muon, orthogonalize
from kagglecifar.training.optim import set_learning_rate, triangle

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def smooth_images(n=200, seed=0):
    """Images with correlated neighbouring pixels and channels, like photos: float NCHW in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 8, 8, generator=g) * 0.6 + torch.rand(n, 3, 8, 8, generator=g) * 0.4
    return F.interpolate(low, size=32, mode="bilinear", align_corners=False).clamp(0, 1)


def small():
    torch.manual_seed(0)
    return create_model("airbench94", width=0.25)


def test_whitening_stem_decorrelates_patches():
    model = small()
    images = smooth_images()
    assert not model.whitened
    model.init_whitening(images)
    assert model.whitened
    with torch.no_grad():
        out = F.conv2d(model.normalize(images), model.whiten.weight)[:, :12]  # the +eigenvector half
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = flat.T @ flat / len(flat)
    # decorrelated, and unit variance along every direction the data has: eigenvalue / (eigenvalue + 5e-4)
    diagonal = torch.diagonal(covariance)
    assert (covariance - torch.diag(diagonal)).abs().max() < 1e-4
    assert diagonal.max() <= 1 and (diagonal > 0.95).sum() >= 8
    assert torch.equal(model.whiten.weight[12:], -model.whiten.weight[:12])


def test_uint8_nhwc_images_whiten_like_float_nchw():
    images = smooth_images(50)
    a, b = small(), small()
    a.init_whitening(images)
    b.init_whitening((images * 255).round().to(torch.uint8).permute(0, 2, 3, 1))
    assert torch.allclose(a.whiten.weight, b.whiten.weight, rtol=0.05, atol=0.05)


def test_checkpoint_restores_the_stem_without_data():
    model = small()
    model.init_whitening(smooth_images(50))
    x = smooth_images(4, seed=1)
    twin = small()
    twin.load_state_dict(model.state_dict())
    assert twin.whitened
    with torch.no_grad():
        assert torch.equal(model.eval()(x), twin.eval()(x))


def test_frozen_parts_get_no_gradient_and_groups_cover_the_rest():
    model = small()
    model.init_whitening(smooth_images(50))
    groups = param_groups(model, lr=0.5, weight_decay=1e-3, bias_lr_scale=64)
    in_groups = [p for g in groups for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(in_groups) == len(trainable) == len({id(p) for p in in_groups})
    shifts, whiten, others = groups
    assert [g["name"] for g in groups] == ["norm_biases", "whitening_bias", "weights"]
    assert shifts["lr"] == 32 and shifts["lr_scale"] == 64 and shifts["weight_decay"] == pytest.approx(1e-3 / 64)
    assert all(p.ndim == 1 for p in shifts["params"]) and others["lr_scale"] == 1
    assert whiten["params"] == [model.whiten.bias] and all(p.ndim > 1 for p in others["params"])
    assert not model.whiten.weight.requires_grad
    assert all(not m.weight.requires_grad for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))

    assert model.frozen_groups(WHITEN_BIAS_EPOCHS - 1) == set()
    assert model.frozen_groups(WHITEN_BIAS_EPOCHS) == {"whitening_bias"}


def test_the_whitening_bias_freezes_by_learning_rate_not_by_requires_grad():
    """Freezing must not change requires_grad: that would recompile a compiled model and rebuild DDP."""
    model = small()
    model.init_whitening(smooth_images(50))
    optimizer = torch.optim.SGD(param_groups(model, 0.5, 1e-3), lr=0.5, momentum=0.85, nesterov=True)
    for epoch in range(WHITEN_BIAS_EPOCHS + 2):
        bias = model.whiten.bias.detach().clone()
        set_learning_rate(optimizer, 0.5, model.frozen_groups(epoch))
        optimizer.zero_grad()
        F.cross_entropy(model(smooth_images(8)), torch.arange(8)).backward()
        optimizer.step()
        assert model.whiten.bias.requires_grad and model.whiten.bias.grad.abs().sum() > 0
        moved = not torch.equal(model.whiten.bias, bias)
        assert moved == (epoch < WHITEN_BIAS_EPOCHS), epoch


def test_convs_start_as_identity_on_their_first_channels():
    model = small()
    conv = model.groups[1].conv2  # 64 -> 64 at width 0.25
    x = torch.randn(2, conv.in_channels, 5, 5)
    assert torch.allclose(conv(x)[:, : conv.in_channels], x, atol=1e-6)


def test_lookahead_pulls_back_and_finishes_on_the_slow_weights():
    model = torch.nn.Linear(3, 2)
    lookahead = Lookahead(model, every=2)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    lookahead.step(1, 10)  # not a multiple of 2: nothing happens
    assert torch.equal(model.weight, start + 1)
    lookahead.step(2, 10)
    decay = lookahead_decay(2, 10)
    assert torch.allclose(model.weight, start + (1 - decay))
    saved = {k: v.clone() for k, v in lookahead.state_dict()["slow"].items()}
    with torch.no_grad():
        model.weight.add_(5.0)
    lookahead.finish()
    assert torch.allclose(model.weight, saved["weight"])
    other = Lookahead(torch.nn.Linear(3, 2))
    other.load_state_dict(lookahead.state_dict())
    assert torch.equal(other.slow["weight"], lookahead.slow["weight"])
    assert lookahead_decay(0, 10) == 0 and lookahead_decay(10, 10) == pytest.approx(0.95**5)


@pytest.mark.slow
def test_muon_steps_conv_filters_with_orthogonalised_updates():
    g = torch.randn(16, 24 * 9)
    singular = torch.linalg.svdvals(orthogonalize(g))
    assert singular.min() > 0.3 and singular.max() < 1.7
    conv = torch.nn.Conv2d(24, 16, 3, bias=False)
    before = conv.weight.detach().clone()
    opt = Muon([conv.weight], lr=0.1)
    conv(torch.randn(4, 24, 8, 8)).square().mean().backward()
    opt.step()
    assert conv.weight.shape == before.shape and not torch.equal(conv.weight, before)
    assert torch.linalg.norm(conv.weight.detach().flatten(1), dim=None) == pytest.approx(16**0.5, rel=0.2)


def test_muon_optimizer_puts_filters_on_muon_and_steps_the_rest_exactly_like_sgd():
    from kagglecifar.config import Recipe
    from kagglecifar.training.optim import make_optimizer, set_learning_rate

    def steps(model, optimizer, x, n):
        for _ in range(n):
            set_learning_rate(optimizer, 0.1)
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()

    settings = dict(lr=0.3, momentum=0.85, weight_decay=5e-4)
    torch.manual_seed(0)
    model = create_model("airbench94", width=0.125)
    twin = copy.deepcopy(model)
    muon = make_optimizer(model, Recipe(model="airbench94", optimizer="muon", muon_lr=0.24, **settings))
    (filters,) = [g for g in muon.param_groups if g["orthogonalize"]]
    assert {p.ndim for p in filters["params"]} == {4} and len(filters["params"]) == 6  # 3 groups x 2 convs
    assert filters["lr_scale"] == pytest.approx(0.24 / 0.3) and filters["weight_decay"] == 0
    x = torch.rand(8, 3, 32, 32)
    steps(model, muon, x, 1)
    steps(twin, make_optimizer(twin, Recipe(model="airbench94", optimizer="sgd", **settings)), x, 1)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        if p.ndim == 4 and p.requires_grad:
            assert not torch.allclose(p, q), name  # Muon's step
        else:  # shifts, whitening bias, head: torch.optim.SGD's step
            assert torch.allclose(p, q, atol=1e-7), name

    # Without conv filters every group is SGD: momentum, Nesterov and weight decay match torch's over steps.
    mlp = create_model("mlp")
    mlp_twin = copy.deepcopy(mlp)
    steps(mlp, make_optimizer(mlp, Recipe(model="mlp", optimizer="muon", **settings)), x, 3)
    steps(mlp_twin, make_optimizer(mlp_twin, Recipe(model="mlp", optimizer="sgd", **settings)), x, 3)
    assert all(torch.allclose(p, q, atol=1e-7) for p, q in zip(mlp.parameters(), mlp_twin.parameters()))


def test_triangle_schedule():
    assert triangle(0) == pytest.approx(0.2) and triangle(0.23) == pytest.approx(1)
    assert triangle(1) == pytest.approx(0.07) and triangle(0.5) < 1
