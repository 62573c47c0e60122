"""Recipes belong to models: every model learns with its own recipe; a preset's values are never dropped or
changed without a line saying so; a diverged run stops at once with one line."""

import json
import math
import re

import numpy as np
import pytest
import torch

from kagglecifar import config, models, recipes
from kagglecifar.checkpoint import load_checkpoint
from kagglecifar.errors import KaggleCifarError, TrainingDiverged
from kagglecifar.models import to_model_input
from kagglecifar.recipes import make_config
from kagglecifar.training.lookahead import Lookahead
from kagglecifar.training.optim import learning_rate, make_optimizer, set_learning_rate
from kagglecifar.training.step import training_step
from kagglecifar.training.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BATCH, STEPS_PER_EPOCH, EPOCHS = 64, 2, 6


def colour_batches(seed=0):
    """128 images whose 10 classes differ by colour, as uint8 NHWC, in batches of 64."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(BATCH * STEPS_PER_EPOCH) % 10)
    colours = rng.integers(0, 256, (10, 3))
    pixels = np.clip(colours[labels][:, None, None, :] + rng.normal(0, 20, (len(labels), 32, 32, 3)), 0, 255)
    images = torch.from_numpy(pixels.astype(np.uint8))
    return images, torch.from_numpy(labels)


def small_model_options(name):
    """A small version of the model that keeps its layout: the widest of 1, 1/2, 1/4, 1/8 at which it costs at
    most 50 MFLOPs per image (an eighth at least)."""
    if "weights" in models.model_options(name):
        return {"weights": None, "image_size": 32, "freeze_stages": 3}  # no download; CIFAR size; 4th stage learns
    widths = (1.0, 0.5, 0.25)
    return {"width": next((w for w in widths if models.model_info(name, width=w)["flops"] <= 50e6), 0.125)}


QUICK = ("mlp", "simplecnn", "airbench-cpu")  # the others take 5-20 s each on two busy cores


@pytest.mark.parametrize(
    "name", [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in models.model_names()]
)
def test_every_model_learns_with_its_own_recipe(name):
    """The model's recipe (through the gpu preset: its own for ResNet-18, the model's family's for the others),
    at a batch of 64 with the rate scaled linearly, trained with the trainer's step, schedule and lookahead:
    the loss of the last epoch is well below the first's."""
    recipe = make_config(name, "gpu", device="cpu").recipe
    recipe.lr *= min(BATCH, recipe.batch_size) / recipe.batch_size
    recipe.epochs = EPOCHS
    torch.manual_seed(0)
    model = models.create_model(name, num_classes=10, **small_model_options(name))
    images, labels = colour_batches()
    if hasattr(model, "init_from_data"):
        model.init_from_data(images)
    optimizer, lookahead = make_optimizer(model, recipe), Lookahead(model) if recipe.lookahead else None
    losses, total = [], STEPS_PER_EPOCH * EPOCHS
    for step in range(total):
        rows = slice((step % STEPS_PER_EPOCH) * BATCH, (step % STEPS_PER_EPOCH + 1) * BATCH)
        set_learning_rate(optimizer, learning_rate(recipe, step, STEPS_PER_EPOCH))
        _, loss = training_step(
            model, optimizer, to_model_input(images[rows], torch.device("cpu")), labels[rows], recipe.label_smoothing
        )
        if lookahead:
            lookahead.step(step + 1, total)
        losses.append(loss.item())
    first, last = np.mean(losses[:STEPS_PER_EPOCH]), np.mean(losses[-STEPS_PER_EPOCH:])
    assert math.isfinite(last) and last < 0.9 * first, (name, losses)


def test_the_hardest_share_steps_on_the_highest_losses_alone():
    """--hardest-share: the gradient is the mean loss's over the images a no-gradient pass found the worst, and
    the logits returned are that pass's for the whole batch (the trainer counts every label)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 10))
    x, y = torch.randn(8, 3, 2, 2), torch.arange(8) % 10
    worst = torch.nn.functional.cross_entropy(net(x), y, label_smoothing=0.1, reduction="none").topk(2).indices
    params = list(net.parameters())
    expected_loss = torch.nn.functional.cross_entropy(net(x[worst]), y[worst], label_smoothing=0.1)
    expected = torch.autograd.grad(expected_loss, params)
    whole = torch.autograd.grad(torch.nn.functional.cross_entropy(net(x), y, label_smoothing=0.1), params)
    logits, loss = training_step(net, torch.optim.SGD(params, lr=0.0), x, y, 0.1, hardest=0.25)
    assert logits.shape == (8, 10)
    torch.testing.assert_close(loss, expected_loss)
    for param, grad, grad_of_all in zip(params, expected, whole):
        torch.testing.assert_close(param.grad, grad)
        assert not torch.allclose(grad, grad_of_all)


def test_a_small_hardest_share_still_steps_on_two_images():
    """BatchNorm in training mode needs two images: a share that rounds to fewer keeps the worst two."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(12, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 10)
    )
    x, y = torch.randn(4, 3, 2, 2), torch.arange(4)
    with torch.no_grad():
        worst = torch.nn.functional.cross_entropy(net(x), y, reduction="none").topk(2).indices
    _, loss = training_step(net, torch.optim.SGD(net.parameters(), lr=0.0), x, y, hardest=0.1)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(net(x[worst]), y[worst]))


# ---- no silent changes -------------------------------------------------------------------------------


def named(notes, key):
    return any(re.search(rf"\b{key} ", line) for line in notes)


@pytest.mark.parametrize("preset", recipes.preset_names())
@pytest.mark.parametrize("from_preset", [False, True])
def test_every_preset_value_not_taken_is_named(preset, from_preset):
    """presets x models: each value of the preset that the config does not end with is named in the notes, and
    the first line says where the recipe came from."""
    for name in models.model_names():
        made = make_config(name, preset, device="cpu", recipe_from_preset=from_preset)
        final = {**config.dataclasses.asdict(made.recipe), **config.dataclasses.asdict(made.session)}
        preset_model = recipes.preset_values(preset)["model"]
        for key, value in recipes.preset_values(preset).items():
            if key != "model" and final[key] != value:
                assert named(made.notes[1:], key), (preset, name, key, made.notes)
        first = made.notes[0]
        assert first.startswith(f"config: {name}; recipe: ") and "session: " in first
        if name == preset_model:
            assert f"recipe: the {preset} preset's;" in first
        elif from_preset:
            assert f"the {preset} preset's, made for {preset_model} (--recipe-from-preset)" in first
        else:
            assert f"recipe: {name}'s own (the {models.recipe_preset(name)} preset's" in first


@pytest.mark.parametrize("preset", recipes.preset_names())
def test_adamw_s_defaults_are_said_and_given_values_win(preset):
    made = make_config("resnet18", preset, device="cpu", optimizer="adamw")
    assert (made.recipe.lr, made.recipe.weight_decay) == (config.ADAMW_DEFAULTS["lr"], 0.05)
    (line,) = [n for n in made.notes if "adamw" in n and "AdamW's" in n]
    assert named([line], "lr") and named([line], "weight_decay") and "give --lr and --weight-decay" in line
    given = make_config("resnet18", preset, device="cpu", optimizer="adamw", lr=0.01)
    assert given.recipe.lr == 0.01 and given.recipe.weight_decay == 0.05
    (line,) = [n for n in given.notes if "AdamW's" in n]
    assert "weight_decay 0.05" in line and "lr 0.002" not in line


def test_a_model_s_options_dropped_by_a_later_model_are_said(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("recipe:\n  model: resnet18\n  width: 0.5\n  dropout: 0.1\n")
    made = make_config("simplecnn", "gpu", config_file=recipe, device="cpu")
    assert made.recipe.width is None and made.recipe.dropout is None
    assert any("model simplecnn: width 0.5, dropout 0.1 dropped (set for resnet18)" in n for n in made.notes)


def test_train_resnet18_on_a_cpu_gets_resnet_s_recipe_not_airbench_s(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    made = make_config("resnet18", device="cpu")
    gpu = recipes.preset_values("gpu")
    assert made.preset == "cpu" and (made.recipe.lr, made.recipe.schedule) == (gpu["lr"], gpu["schedule"])
    assert not made.recipe.lookahead and made.recipe.width is None
    cpu_epochs = recipes.preset_values("cpu")["epochs"]
    assert f"not taken from the cpu preset: width 0.25, epochs {cpu_epochs}, lr 0.75" in made.notes[1]


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "0", "-1"])
def test_a_learning_rate_that_is_not_finite_and_positive_is_refused(run_cli, tmp_path, value):
    for key in ("lr", "muon_lr"):
        with pytest.raises(KaggleCifarError, match=f"--{key.replace('_', '-')} .*: must be (positive|a finite number)"):
            make_config("mlp", "cpu", sets=[f"{key}={value}"], device="cpu")
    code, _, err = run_cli("train", "mlp", "--set", f"lr={value}", "--device", "cpu", "--data-dir", tmp_path)
    assert (
        code == 1
        and ("must be positive" in err or "must be a finite number" in err)
        and len(err.strip().splitlines()) == 1
    )


def test_train_help_says_where_recipes_come_from(run_cli):
    code, out, _ = run_cli("train", "--help")
    flat = " ".join(out.split())
    assert code == 0 and "--recipe-from-preset" in flat
    assert "MODEL trains with its own family's recipe (ResNets: gpu's, airbench: fast's" in flat
    assert "the first line says where each part came from" in flat


# ---- divergence ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from test_train import make_cache

    return make_cache(tmp_path_factory.mktemp("data"))


def test_a_diverging_run_stops_with_one_line_and_a_non_zero_exit(data_dir, tmp_path, run_cli):
    args = ["--lr", "1000", "--epochs", "3", "--batch-size", "16", "--data-dir", data_dir, "--device", "cpu"]
    code, out, err = run_cli("train", "simplecnn", *args, "--runs-dir", tmp_path, "--name", "boom")
    assert code == 1, err
    (line,) = [line for line in err.splitlines() if line.startswith("kagglecifar: error:")]
    assert line == err.strip().splitlines()[-1] and "train:" not in out
    found = re.search(r"at epoch 1, step (\d+) of (\d+) \(learning rate ([0-9.e+-]+)\)", line)
    assert found and int(found[1]) <= 10 and "try a lower --lr, e.g. --lr 500 (half of 1000)" in line, line
    assert "no checkpoint was written" in line and not list((tmp_path / "boom").glob("*.pt"))
    result = json.loads((tmp_path / "boom" / "result.json").read_text())
    assert result["stopped_reason"] == "diverged" and result["diverged"]["epoch"] == 1
    assert result["diverged"]["step"] == int(found[1]) and result["epochs_run"] == 0


class PoisonedLoader:
    """The default order, with NaN images from one step of epoch 2 on: the loss there is not finite."""

    def __init__(self, images, labels, cfg, at_step):
        from kagglecifar.data.loading import TrainLoader

        recipe = cfg.recipe
        self.inner = TrainLoader(images, labels, augment="none", batch_size=recipe.batch_size, seed=recipe.seed)
        self.at_step = at_step

    def __len__(self):
        return len(self.inner)

    def epoch(self, epoch, start=0):
        for step, (images, labels) in enumerate(self.inner.epoch(epoch, start), start):
            images = images.permute(0, 3, 1, 2).float() / 255
            if epoch == 1 and step >= self.at_step:
                images = images * float("nan")
            yield images, labels


def test_divergence_keeps_the_last_good_checkpoints_and_stops_within_ten_steps(data_dir, tmp_path):
    from test_train import small_config

    cfg = small_config(data_dir, tmp_path, epochs=3, batch_size=8, name="nan")
    with pytest.raises(TrainingDiverged) as raised:
        train(cfg, make_loader=lambda i, la, c: PoisonedLoader(i, la, c, at_step=2))
    line = str(raised.value)
    assert "at epoch 2, step 3 of" in line and "keeps the checkpoints of epoch 1, the last good one" in line
    run = tmp_path / "nan"
    for name in ("best.pt", "last.pt"):
        saved = load_checkpoint(run / name)
        assert saved["epoch"] == 1 and all(torch.isfinite(v).all() for v in saved["state_dict"].values()), name
    assert len((run / "metrics.csv").read_text().splitlines()) == 2  # the header and epoch 1
    result = json.loads((run / "result.json").read_text())
    assert result["stopped_reason"] == "diverged" and result["diverged"]["step"] == 3

    from kagglecifar.reports.compare import compare, table_lines

    (summary,) = compare([run])
    assert summary.stopped == "diverged"
    assert any("1/3 diverged" in row for row in table_lines([summary]))
