"""Training: data split and loader, the loop, run folders, resume, time budget, Ctrl-C, DDP, errors."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from kagglecifar import cache, models
from kagglecifar.checkpoint import build_model, load_checkpoint
from kagglecifar.data.device_loader import choose_loader
from kagglecifar.data.loading import TrainLoader, load_train_data
from kagglecifar.models import to_model_input
from kagglecifar.recipes import make_config
from kagglecifar.training.train import resume_config, train

CLASSES = [f"class{i}" for i in range(10)]
BAD_ROWS = (7, 42)


def make_cache(data_dir, count=200, noise=25, seed=0):
    """A train cache whose classes differ by colour, so a tiny model learns; two rows undecodable."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    colours = rng.integers(0, 256, (10, 3))
    images = np.clip(colours[labels][:, None, None, :] + rng.normal(0, noise, (count, 32, 32, 3)), 0, 255)
    bad = np.isin(np.arange(count), BAD_ROWS)
    images[bad] = 0
    cache.write_split(
        data_dir, "train", images.astype(np.uint8), np.arange(1, count + 1), CLASSES, labels=labels, bad=bad
    )
    return data_dir


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("data"))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_config(data_dir, runs_dir, **options):
    values = dict(
        model="mlp",
        epochs=2,
        batch_size=32,
        lr=0.05,
        momentum=0.9,
        schedule="onecycle",
        warmup_epochs=0.5,
        label_smoothing=0.1,
        lookahead=False,
        alternate_flip=False,
        augment="standard",
        workers=0,
        device="cpu",
        data_dir=data_dir,
        runs_dir=runs_dir,
    )
    return make_config(preset="cpu", **{**values, **options})


# ---- data ----------------------------------------------------------------------------------------


def test_split_is_stratified_seeded_and_leaves_out_bad_images(data_dir):
    data = load_train_data(data_dir, 0.1, seed=0)
    assert len(data.train_labels) + len(data.val_labels) == 200 - len(BAD_ROWS)
    assert data.excluded_bad == len(BAD_ROWS)
    split = cache.load_split(data_dir, "train")
    good_per_class = np.bincount(split.labels[~split.bad], minlength=10)
    assert np.array_equal(np.bincount(data.val_labels, minlength=10), np.round(good_per_class * 0.1))
    bad_ids = set(split.ids[split.bad])
    assert not bad_ids & set(data.val_ids)
    assert np.array_equal(split.labels[np.searchsorted(split.ids, data.val_ids)], data.val_labels)
    assert np.array_equal(load_train_data(data_dir, 0.1, seed=0).val_ids, data.val_ids)
    assert not np.array_equal(load_train_data(data_dir, 0.1, seed=1).val_ids, data.val_ids)
    assert len(load_train_data(data_dir, 0.0, seed=0).val_ids) == 0


def batches(loader, epoch, start=0):
    return [(x.clone(), y.clone()) for x, y in loader.epoch(epoch, start)]


def test_loader_batches_depend_only_on_seed_and_epoch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(100)  # row numbers, to see which rows a batch holds
    loader = TrainLoader(images, labels, augment="standard", batch_size=16, seed=1, workers=0)
    epoch3 = batches(loader, 3)
    assert len(epoch3) == len(loader) == 6 and all(
        x.dtype == torch.uint8 and x.shape == (16, 32, 32, 3) for x, _ in epoch3
    )
    with_workers = TrainLoader(images, labels, augment="standard", batch_size=16, seed=1, workers=2)
    for (x, y), (x2, y2) in zip(epoch3, batches(with_workers, 3), strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    for (x, y), (x2, y2) in zip(epoch3[2:], batches(loader, 3, start=2), strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(batches(loader, 4)[0][1], epoch3[0][1])
    # DDP shards: disjoint rows, together the whole epoch.
    shards = [
        torch.cat(
            [
                y
                for _, y in batches(
                    TrainLoader(images, labels, augment="none", batch_size=10, seed=1, rank=rank, world_size=2), 3
                )
            ]
        )
        for rank in (0, 1)
    ]
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    assert sorted(shards[0].tolist() + shards[1].tolist()) == list(range(100))


def test_model_input_is_float_nchw_in_unit_range():
    images = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    x = to_model_input(images, "cpu")
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and x.is_contiguous()
    assert torch.allclose(x, images.permute(0, 3, 1, 2).float() / 255)


# ---- the training loop -----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_model_overfits_a_small_batch(tmp_path):
    rng = np.random.default_rng(1)
    data_dir = tmp_path / "noise"  # random images with random labels: only memorising fits them
    cache.write_split(
        data_dir, "train", rng.integers(0, 256, (32, 32, 32, 3)), np.arange(32), CLASSES, labels=rng.integers(0, 10, 32)
    )
    result = train(
        small_config(
            data_dir,
            tmp_path / "runs",
            epochs=40,
            batch_size=16,
            augment="none",
            val_fraction=0.0,
            label_smoothing=0.0,
            weight_decay=0.0,
        )
    )
    rows = load_checkpoint(result.run_dir / "last.pt")["train_state"]["progress"]["metrics"]
    assert rows[-1]["train_acc"] == 1.0
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] / 10
    assert result.best_val_accuracy is None and (result.run_dir / "best.pt").is_file()


def test_cli_train_writes_a_complete_run_folder(data_dir, tmp_path, run_cli):
    code, out, err = run_cli(
        "train",
        "resnet18",
        "--width",
        "0.125",
        "--preset",
        "cpu",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--ema",
        "--ema-decay",
        "0.9",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--name",
        "tiny",
        "--data-dir",
        data_dir,
        "--runs-dir",
        tmp_path,
    )
    assert code == 0, err
    run = tmp_path / "tiny"
    assert out.strip().splitlines()[-1].startswith("train: best val accuracy") and str(run) in out
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["recipe"]["model"] == "resnet18" and config["recipe"]["ema"] is True
    environment = json.loads((run / "run.json").read_text())["environment"]
    assert environment["train_images"] + environment["val_images"] == 198
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0] == "epoch,lr,train_loss,train_acc,val_loss,val_acc,images_per_s,train_seconds,seconds"
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2"]
    for name in ("curves.png", "confusion_matrix.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temporary files left

    best = load_checkpoint(run / "best.pt")  # weights_only=True
    last = load_checkpoint(run / "last.pt")
    for checkpoint in (best, last):
        assert {"model", "model_kwargs", "classes", "state_dict", "val_ids", "epoch", "val_accuracy", "config"} <= set(
            checkpoint
        )
    assert best["model_kwargs"] == {"width": 0.125} and best["classes"] == CLASSES
    assert best["val_ids"] == load_train_data(data_dir, 0.1, seed=0).val_ids.tolist()
    assert last["epoch"] == 2 and {"optimizer", "rng", "progress", "model_state"} <= set(last["train_state"])
    # The saved weights (EMA) reproduce the recorded validation accuracy.
    model = models.create_model(best["model"], num_classes=10, **best["model_kwargs"]).eval()
    model.load_state_dict(best["state_dict"])
    split = cache.load_split(data_dir, "train")
    rows = np.searchsorted(split.ids, best["val_ids"])
    with torch.no_grad():
        predicted = model(to_model_input(torch.from_numpy(split.images[rows]), "cpu")).argmax(1).numpy()
    assert np.mean(predicted == split.labels[rows]) == pytest.approx(best["val_accuracy"])


def test_early_stopping_after_patience_epochs(data_dir, tmp_path):
    result = train(small_config(data_dir, tmp_path, epochs=8, lr=1e-9, patience=2, augment="none"))
    assert result.stopped_reason == "early_stopping" and result.epochs_run == 3 and result.best_epoch == 1


# ---- resume: a stopped run ends exactly like an uninterrupted one ----------------------------------

RESUME_OPTIONS = dict(model="mlp", dropout=0.3, ema=True, ema_decay=0.9, epochs=2, batch_size=16)


@pytest.fixture(scope="module")
def straight_run(data_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    return train(small_config(data_dir, runs, name="straight", **RESUME_OPTIONS)).run_dir


def assert_same_run(run, expected):
    got, want = load_checkpoint(run / "last.pt"), load_checkpoint(expected / "last.pt")
    for key in want["state_dict"]:
        assert torch.equal(got["state_dict"][key], want["state_dict"][key]), key
    for key in want["train_state"].get("model_state", {}):  # the raw weights when the saved ones are the EMA
        assert torch.equal(got["train_state"]["model_state"][key], want["train_state"]["model_state"][key]), key
    timing = ("images_per_s", "train_seconds", "seconds")
    strip = lambda rows: [{k: v for k, v in row.items() if k not in timing} for row in rows]  # noqa: E731
    assert strip(got["train_state"]["progress"]["metrics"]) == strip(want["train_state"]["progress"]["metrics"])
    assert got["train_state"]["progress"]["step"] == want["train_state"]["progress"]["step"]


class StoppingLoader:
    """The loader train would choose, plus a stop at a chosen (epoch, batch): an exception (a kill) or a Ctrl-C."""

    def __init__(self, images, labels, config, at, action):
        recipe = config.recipe
        self.loader, _ = choose_loader(
            images,
            labels,
            augment=recipe.augment,
            batch_size=recipe.batch_size,
            seed=recipe.seed,
            alternate_flip=recipe.alternate_flip,
        )
        self.at, self.action = at, action

    def __len__(self):
        return len(self.loader)

    def epoch(self, epoch, start=0):
        for number, batch in enumerate(self.loader.epoch(epoch, start), start=start):
            if (epoch, number) == self.at:
                self.action()
            yield batch


def kill():
    raise KeyboardInterrupt  # what a second Ctrl-C does: no clean stop


def test_killed_run_resumes_to_identical_weights(data_dir, tmp_path, straight_run):
    config = small_config(data_dir, tmp_path, name="killed", **RESUME_OPTIONS)
    with pytest.raises(KeyboardInterrupt):
        train(config, make_loader=lambda images, labels, c: StoppingLoader(images, labels, c, (1, 0), kill))
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 1
    result = train(resume_config("killed", runs_dir=tmp_path))
    assert result.stopped_reason == "completed" and result.epochs_run == 2
    assert_same_run(tmp_path / "killed", straight_run)


def test_time_budget_stops_mid_epoch_and_resumes_identically(data_dir, tmp_path, straight_run):
    result = train(small_config(data_dir, tmp_path, name="budget", time_budget=1e-6, **RESUME_OPTIONS))
    assert result.stopped_reason == "time_budget" and result.epochs_run == 0
    assert "no epoch completed yet" in result.line() and "--resume" in result.line()
    progress = load_checkpoint(tmp_path / "budget" / "last.pt")["train_state"]["progress"]
    assert (progress["epoch"], progress["epoch_step"]) == (0, 1)
    with pytest.raises(Exception, match="cannot change --lr"):
        resume_config(tmp_path / "budget", lr=0.5)
    result = train(resume_config(tmp_path / "budget"))  # the budget was for that session only
    assert result.stopped_reason == "completed" and result.epochs_run == 2
    assert_same_run(tmp_path / "budget", straight_run)


def test_ctrl_c_saves_last_and_resumes_identically(data_dir, tmp_path, straight_run):
    config = small_config(data_dir, tmp_path, name="ctrl-c", **RESUME_OPTIONS)
    ctrl_c = lambda: os.kill(os.getpid(), signal.SIGINT)  # noqa: E731
    handler = signal.getsignal(signal.SIGINT)
    result = train(config, make_loader=lambda images, labels, c: StoppingLoader(images, labels, c, (0, 3), ctrl_c))
    assert result.stopped_reason == "interrupted"
    assert load_checkpoint(tmp_path / "ctrl-c" / "last.pt")["train_state"]["progress"]["step"] == 4
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    train(resume_config("ctrl-c", runs_dir=tmp_path))
    assert_same_run(tmp_path / "ctrl-c", straight_run)


# ---- several processes ---------------------------------------------------------------------------


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_in_sync(data_dir, tmp_path):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "kagglecifar",
        "train",
        "mlp",
        "--preset",
        "cpu",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--name",
        "ddp",
        "--data-dir",
        str(data_dir),
        "--runs-dir",
        str(tmp_path),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    # Each rank checks at the end that its weights equal every other rank's, and fails otherwise.
    assert done.returncode == 0, done.stderr[-3000:]
    assert "terminate called" not in done.stderr and "has NOT been destroyed" not in done.stderr
    assert done.stdout.count("train: best val accuracy") == 1  # rank 0 alone reports
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]  # rank 0 alone writes
    assert json.loads((tmp_path / "ddp" / "run.json").read_text())["environment"]["world_size"] == 2
    last = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert last["train_state"]["world_size"] == 2 and last["epoch"] == 2
    assert len(last["train_state"]["progress"]["metrics"]) == 2
    # 178 training images, 16 per rank per step, 89 per rank: 5 steps an epoch.
    assert last["train_state"]["progress"]["step"] == 10


@pytest.mark.slow
def test_ddp_trains_airbench_past_the_epoch_its_stem_bias_freezes(data_dir, tmp_path):
    """From epoch WHITEN_BIAS_EPOCHS on the stem's bias gets no gradient; DDP's reducer, built while it had
    one, stopped the run there ("Expected to have finished reduction in the prior iteration")."""
    from kagglecifar.models.airbench import WHITEN_BIAS_EPOCHS

    epochs = WHITEN_BIAS_EPOCHS + 1
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "kagglecifar",
        "train",
        "airbench94",
        "--preset",
        "cpu",
        "--width",
        "0.125",
        "--epochs",
        str(epochs),
        "--batch-size",
        "32",
        "--lr",
        "0.2",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--name",
        "ddp",
        "--data-dir",
        str(data_dir),
        "--runs-dir",
        str(tmp_path),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-3000:]  # each rank also checks its weights equal the others'
    assert len(load_checkpoint(tmp_path / "ddp" / "last.pt")["train_state"]["progress"]["metrics"]) == epochs


def test_process_group_outlives_everything_the_training_built(monkeypatch):
    """DDP state left in reference cycles past destroy_process_group made the two-process run abort at exit
    now and then; the teardown must find it already freed, even when no garbage collection happened to run."""
    import gc
    import weakref

    from kagglecifar.training import runtime

    class Built:  # stands in for Training and its DDP wrapper: kept alive only by a reference cycle
        def __init__(self):
            self.cycle = self

    events, built = [], []
    monkeypatch.setattr(runtime, "world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend: events.append("init"))
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 0)
    monkeypatch.setattr(torch.distributed, "barrier", lambda: events.append("barrier"))
    monkeypatch.setattr(
        torch.distributed,
        "destroy_process_group",
        lambda: events.append(f"destroy, body's objects alive: {built[0]() is not None}"),
    )
    gc.disable()
    try:
        with runtime.distributed(torch.device("cpu"), batch_size=8):
            built.append(weakref.ref(Built()))
    finally:
        gc.enable()
    assert events == ["init", "barrier", "destroy, body's objects alive: False"]


# ---- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,message",
    [
        (["nosuchmodel"], "unknown model 'nosuchmodel'"),
        (["mlp", "--epochs", "-1"], "--epochs -1: must be at least 1"),
        (["mlp", "--val-fraction", "1"], "--val-fraction 1.0: must be in [0, 1)"),
        (["mlp", "--augment", "strng"], "--augment strng: not a preset"),
        (["mlp", "--optimizer", "lion"], "--optimizer lion: choose sgd, adamw or muon"),
        (["mlp", "--preset", "tpu"], "--preset tpu: unknown preset"),
        (["mlp", "--resume", "nope"], "--resume nope: no such run"),
        (["mlp", "--name", "straight"], "already exists; continue it with --resume straight"),
        (["--resume", "straight", "--epochs", "9"], "cannot change --epochs"),
    ],
)
def test_bad_options_give_one_clear_line(data_dir, straight_run, run_cli, args, message):
    code, out, err = run_cli(
        "train", *args, "--device", "cpu", "--data-dir", data_dir, "--runs-dir", straight_run.parent
    )
    assert code == 1
    assert err.strip().splitlines() == [f"kagglecifar: error: {err.strip().split('error: ', 1)[1]}"]
    assert message in err


def test_missing_cache_and_missing_cuda_are_clear(tmp_path, run_cli):
    code, _, err = run_cli(
        "train", "mlp", "--device", "cpu", "--data-dir", tmp_path / "empty", "--runs-dir", tmp_path / "runs"
    )
    assert code == 1 and "no train cache here; run `kagglecifar fetch` first" in err
    if not torch.cuda.is_available():
        code, _, err = run_cli("train", "mlp", "--device", "cuda", "--data-dir", tmp_path)
        assert code == 1 and "--device cuda: CUDA is not available" in err


def test_checkpoints_rebuild_pretrained_models_without_downloading_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no ImageNet weights here, and no network
    config = make_config("resnet50-imagenet", "cpu", freeze_stages=2)
    assert config.model_kwargs() == {"freeze_stages": 2}
    weights = models.create_model("resnet50-imagenet", num_classes=10, weights=None, **config.model_kwargs())
    payload = {
        "model": "resnet50-imagenet",
        "model_kwargs": config.model_kwargs(),
        "classes": CLASSES,
        "state_dict": weights.state_dict(),
    }
    model = build_model(payload)  # would fail if it tried to download the ImageNet weights
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)
    assert make_config("simplecnn", "cpu").model_kwargs() == {}


# ---- configuration: presets, recipe files, --set, --help ------------------------------------------


def test_layers_apply_in_order_and_the_saved_config_trains_the_same_run_again(data_dir, tmp_path, run_cli):
    from kagglecifar.recipes import preset_values

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("recipe:\n  model: mlp\n  epochs: 1\n  lr: 0.5\n  batch_size: 32\nsession:\n  workers: 0\n")
    config = make_config(preset="cpu", config_file=recipe, sets=["lr=0.25", "session.device=cpu"], seed=3)
    assert (config.recipe.model, config.recipe.epochs, config.recipe.lr, config.recipe.seed) == ("mlp", 1, 0.25, 3)
    # The file trains mlp, not the cpu preset's airbench94: what it does not set comes from mlp's own recipe ...
    assert config.recipe.schedule == preset_values("baseline")["schedule"] != preset_values("cpu")["schedule"]
    assert "recipe: mlp's own (the baseline preset's" in config.notes[0] and "schedule triangle" in config.notes[1]
    # ... or from the preset's when asked for
    asked = make_config(preset="cpu", config_file=recipe, recipe_from_preset=True, device="cpu")
    assert asked.recipe.schedule == preset_values("cpu")["schedule"] and asked.recipe.width is None
    assert "not taken from the cpu preset: width 0.25" in asked.notes[1]
    assert config.session.device == "cpu"  # from --set
    code, _, err = run_cli(
        "train",
        "--preset",
        "cpu",
        "--config",
        recipe,
        "--set",
        "seed=3",
        "--name",
        "first",
        "--device",
        "cpu",
        "--data-dir",
        data_dir,
        "--runs-dir",
        tmp_path / "runs",
    )
    assert code == 0, err
    saved = tmp_path / "runs" / "first" / "config.yaml"
    code, _, err = run_cli("train", "--config", saved, "--name", "again", "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    again = yaml.safe_load((tmp_path / "runs" / "again" / "config.yaml").read_text())
    assert again["recipe"] == yaml.safe_load(saved.read_text())["recipe"]
    first, second = (load_checkpoint(tmp_path / "runs" / n / "last.pt") for n in ("first", "again"))
    for key in first["state_dict"]:  # same recipe, same seed, CPU: the same weights
        assert torch.equal(first["state_dict"][key], second["state_dict"][key]), key


@pytest.mark.parametrize(
    "args,message",
    [
        (["--set", "lr"], "--set lr: expected key=value"),
        (["--set", "nosuch=1"], "unknown train option 'nosuch'"),
        (["--set", "epochs=two"], "--set epochs=two: expected an integer"),
        (["--set", "ema=maybe"], "--set ema=maybe: expected true or false"),
        (["--config", "missing.yaml"], "--config missing.yaml: no such recipe file"),
        (["--name", ".."], "--name '..': a run name is one plain folder name"),
        (["--name", "a/b"], "--name 'a/b': a run name is one plain folder name"),
    ],
)
def test_bad_recipe_values_give_one_clear_line(tmp_path, run_cli, args, message):
    code, _, err = run_cli("train", "mlp", "--preset", "cpu", "--device", "cpu", *args, "--data-dir", tmp_path)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1


def test_help_shows_real_defaults_and_each_presets_value(run_cli):
    from kagglecifar.recipes import preset_names, preset_values

    code, out, _ = run_cli("train", "--help")
    assert code == 0
    others = [f"{p} preset: {preset_values(p)['epochs']}" for p in preset_names() if preset_values(p)["epochs"] != 40]
    flat = " ".join(out.split())
    epochs = flat[flat.index("--epochs INT") :]
    assert epochs[: epochs.index("]")].endswith(f"[default: (40; {'; '.join(others)})")
    assert "--ema / --no-ema" in flat and "<bool>" not in flat
    assert "Examples:" in out and "kagglecifar train --resume" in out


# ---- what a careful user runs into ------------------------------------------------------------------


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/kagglecifar-poisoned-checkpoint-ran",))


def test_a_malicious_checkpoint_is_refused_in_one_line_without_running_it(tmp_path, run_cli):
    marker = "/tmp/kagglecifar-poisoned-checkpoint-ran"
    if os.path.exists(marker):
        os.unlink(marker)
    path = tmp_path / "evil.pt"
    torch.save({"model": "mlp", "state_dict": {}, "extra": Payload()}, path)
    code, _, err = run_cli("evaluate", path, "--data-dir", tmp_path)
    assert code == 1 and err.strip().splitlines() == [
        f"kagglecifar: error: {path}: not a safe checkpoint (it holds objects other than tensors and plain data); "
        "it will not be loaded"
    ]
    assert "weights_only" not in err and not os.path.exists(marker)


@pytest.mark.slow
def test_training_logged_to_a_file_writes_one_line_per_epoch_and_no_bar_frames(data_dir, tmp_path):
    command = [
        sys.executable,
        "-m",
        "kagglecifar",
        "train",
        "mlp",
        "--preset",
        "cpu",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--device",
        "cpu",
        "--name",
        "logged",
        "--data-dir",
        str(data_dir),
        "--runs-dir",
        str(tmp_path),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    epochs = [line for line in done.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]


@pytest.mark.parametrize("problem", ["permission", "not-a-folder"])
def test_an_unwritable_runs_folder_is_one_clear_line(data_dir, tmp_path, run_cli, monkeypatch, problem):
    runs = tmp_path / "runs"
    if problem == "permission":  # tests run as root, which chmod cannot stop: refuse as a read-only folder would
        real_mkdir = os.mkdir

        def refuse(path, *args, **kwargs):
            if str(path).startswith(str(runs)):
                raise PermissionError(13, "Permission denied", str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", refuse)
        expected = "Permission denied; check the folder's permissions"
    else:
        runs.write_text("a file where the runs folder should be")
        expected = str(runs)
    code, _, err = run_cli(
        "train",
        "mlp",
        "--preset",
        "cpu",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--data-dir",
        data_dir,
        "--runs-dir",
        runs,
    )
    errors = [line for line in err.splitlines() if line.startswith("kagglecifar: error:")]
    assert code == 1 and len(errors) == 1 and expected in errors[0] and err.strip().endswith(errors[0]), err


# ---- the airbench recipe's parts in the trainer -----------------------------------------------------

AIRBENCH = dict(
    model="airbench94",
    width=0.125,
    epochs=2,
    batch_size=32,
    lr=0.2,
    momentum=0.85,
    schedule="triangle",
    lookahead=True,
    alternate_flip=True,
    label_smoothing=0.2,
    weight_decay=5e-4,
    augment="standard",
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "options", [{"optimizer": "sgd"}, {"optimizer": "muon"}, {"hardest_share": 0.5}], ids=["sgd", "muon", "hardest"]
)
def test_the_airbench_recipe_trains_and_resumes_to_identical_weights(data_dir, tmp_path, options):
    recipe = {**AIRBENCH, **options}
    straight = train(small_config(data_dir, tmp_path, name="straight", **recipe))
    assert straight.stopped_reason == "completed" and straight.best_val_accuracy is not None
    weights = load_checkpoint(straight.run_dir / "last.pt")
    assert bool(weights["state_dict"]["whitened"])  # the stem was set from the training images
    assert "lookahead" in weights["train_state"]
    if options.get("optimizer") == "muon":  # Muon keeps every conv filter bank at norm sqrt(out channels)
        convs = [w for name, w in weights["state_dict"].items() if ".conv" in name]
        assert convs and all(w.flatten().norm() == pytest.approx(len(w) ** 0.5, rel=0.25) for w in convs)
    stopped = train(small_config(data_dir, tmp_path, name="stopped", time_budget=1e-6, **recipe))
    assert stopped.stopped_reason == "time_budget"
    train(resume_config("stopped", runs_dir=tmp_path))
    assert_same_run(tmp_path / "stopped", straight.run_dir)
