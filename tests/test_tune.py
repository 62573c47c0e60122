"""`kagglecifar tune`: search spaces, a pruned search, best.yaml retrained, a killed search resumed, two worker
processes sharing one SQLite study, and the errors."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from test_train import make_cache, small_config

from kagglecifar import config as train_config
from kagglecifar import rundir
from kagglecifar.errors import KaggleCifarError
from kagglecifar.recipes import make_config
from kagglecifar.training.train import train
from kagglecifar.tune import search as tune
from kagglecifar.tune import space
from kagglecifar.tune import storage as tune_storage

PNG = b"\x89PNG\r\n\x1a\n"
# The cpu preset's airbench recipe (lr 0.75, lookahead, triangle) diverges on the tests' MLP: a plain base recipe.
BASE = ["lr=0.05", "momentum=0.9", "schedule=onecycle", "lookahead=false", "alternate_flip=false"]
SETS = ["epochs=4", "batch_size=16", "augment=none", "label_smoothing=0", "workers=0", *BASE]
STATES = optuna.trial.TrialState


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("data"), count=400)


def write_space(path, text="lr: {low: 1.0e-9, high: 0.2, log: true}\n"):
    path.write_text(text)
    return path


def load(tune_dir, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tune_dir / 'study.db'}")


# ---- a search with pruning, its outputs, and best.yaml trained again -----------------------------------


@pytest.fixture(scope="module")
def searched(data_dir, tmp_path_factory):
    """Three trials through the real median pruner: two that learn, then one that cannot (lr 1e-9)."""
    root = tmp_path_factory.mktemp("search")
    runs = root / "runs"
    (runs / "tune-p").mkdir(parents=True)
    storage = tune_storage.open_storage(f"sqlite:///{runs / 'tune-p' / 'study.db'}")
    queued = optuna.create_study(study_name="p", storage=storage, direction="maximize")
    for lr in (0.01, 0.02, 1e-9):  # the queue fixes the order; the sampler would not
        queued.enqueue_trial({"lr": lr})
    said = []
    result = tune.tune(
        "mlp",
        preset="cpu",
        sets=SETS,
        space_file=write_space(root / "space.yaml"),
        trials=3,
        pruner="median",
        name="p",
        runs_dir=runs,
        data_dir=data_dir,
        device="cpu",
        echo=said.append,
    )
    return result, runs, said


@pytest.mark.slow
def test_a_clearly_worse_trial_is_pruned_and_stops_early(searched):
    result, runs, said = searched
    study = load(runs / "tune-p", "p")
    assert [t.state for t in study.trials] == [STATES.COMPLETE, STATES.COMPLETE, STATES.PRUNED]
    assert result.counts["complete"] == 2 and result.counts["pruned"] == 1
    pruned = runs / "tune-p" / "trial-0002"
    # Median pruning starts at epoch 2: the third trial stops there, with its run folder saying why.
    assert [row["epoch"] for row in rundir.read_metrics(pruned)] == [1.0, 2.0]
    assert rundir.read_result(pruned)["stopped_reason"] == "pruned"
    assert len(rundir.read_metrics(runs / "tune-p" / "trial-0000")) == 4
    assert study.trials[2].intermediate_values[2] < min(t.intermediate_values[2] for t in study.trials[:2])
    assert result.best_number == study.best_trial.number and result.best_value == study.best_value
    assert any(line.startswith("trial 2 pruned") for line in said)


def test_pruning_waits_for_half_the_shortest_run():
    lr_only = [space.Dimension("lr", float, 0.1, 1.0)]
    assert tune.pruning_starts(12, lr_only) == 6 and tune.pruning_starts(4, lr_only) == 2
    assert tune.pruning_starts(40, [space.Dimension("epochs", int, 15, 40)]) == 7
    assert tune.pruning_starts(3, [space.Dimension("epochs", int, choices=(8, 3))]) == 2
    study = optuna.create_study(direction="maximize", pruner=tune.make_pruner("median", 6))
    for _ in range(2):
        good = study.ask()
        for epoch in range(1, 13):
            good.report(0.8, epoch)
        study.tell(good, 0.8)
    bad = study.ask()
    for epoch in range(1, 13):
        bad.report(0.1, epoch)
        if bad.should_prune():
            break
    assert epoch == 6


@pytest.mark.slow
def test_a_trial_is_never_pruned_at_its_last_epoch(data_dir, tmp_path):
    """With 2 epochs, pruning may start at epoch 2, the last: the poor trial completes with its value."""
    storage = tune_storage.open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    queued = optuna.create_study(study_name="last", storage=storage, direction="maximize")
    for lr in (0.01, 0.02, 1e-9):
        queued.enqueue_trial({"lr": lr})
    (tmp_path / "tune-last").mkdir()
    (tmp_path / "study.db").rename(tmp_path / "tune-last" / "study.db")
    result = tune.tune(
        "mlp",
        preset="cpu",
        sets=[*SETS, "epochs=2"],
        space_file=write_space(tmp_path / "s.yaml"),
        trials=3,
        name="last",
        runs_dir=tmp_path,
        data_dir=data_dir,
        device="cpu",
        echo=lambda line: None,
    )
    trials = load(tmp_path / "tune-last", "last").trials
    assert [t.state for t in trials] == [STATES.COMPLETE] * 3 and result.counts["pruned"] == 0
    assert trials[2].value < min(t.value for t in trials[:2])


@pytest.mark.slow
def test_outputs_table_csv_best_recipe_and_plots(searched):
    result, runs, said = searched
    tune_dir = runs / "tune-p"
    lines = (tune_dir / "results.csv").read_text().splitlines()
    assert lines[0] == "trial,state,note,lr,best_val_acc,epochs,seconds,run,host"
    assert [line.split(",")[:2] for line in lines[1:]] == [["0", "complete"], ["1", "complete"], ["2", "pruned"]]
    assert [line.split(",")[5] for line in lines[1:]] == ["4", "4", "2"]
    header = next(line for line in said if line.startswith("trial  state"))
    assert header.split() == ["trial", "state", "lr", "best", "val", "acc", "epochs", "time", "note"]
    best = yaml.safe_load((tune_dir / "best.yaml").read_text())
    assert best["recipe"]["lr"] == result.best_params["lr"] and best["recipe"]["epochs"] == 4
    assert best["session"]["runs_dir"] == str(runs)  # trains into RUNS_DIR, not into the search's folder
    for name in ("history.png", "importance.png", "slices.png", "trial_curves.png"):
        assert (tune_dir / name).read_bytes()[:8] == PNG, name
    assert not [p.name for p in tune_dir.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.mark.slow
def test_best_recipe_trains_again_through_train_config(searched, data_dir, tmp_path, run_cli):
    result, runs, _ = searched
    code, out, err = run_cli(
        "train",
        "--config",
        runs / "tune-p" / "best.yaml",
        "--name",
        "again",
        "--data-dir",
        data_dir,
        "--runs-dir",
        tmp_path,
    )
    assert code == 0, err
    trial = runs / "tune-p" / f"trial-{result.best_number:04d}"
    assert rundir.read_config(tmp_path / "again")["recipe"] == rundir.read_config(trial)["recipe"]
    # Same recipe and seed on a CPU: the same training, so the same validation accuracy.
    assert rundir.read_result(tmp_path / "again")["best_val_accuracy"] == pytest.approx(result.best_value)


@pytest.mark.slow
def test_the_same_command_on_a_finished_search_trains_nothing_more(searched, data_dir):
    result, runs, _ = searched
    again = tune.tune(
        "mlp",
        preset="cpu",
        sets=SETS,
        space_file=write_space(runs.parent / "space.yaml"),
        trials=3,
        name="p",
        runs_dir=runs,
        data_dir=data_dir,
        device="cpu",
        echo=lambda line: None,
    )
    assert again.counts == result.counts and len(load(runs / "tune-p", "p").trials) == 3


# ---- resuming, sharing -------------------------------------------------------------------------------


def tune_command(data_dir, runs, space_file, *options):
    base = [arg for setting in BASE for arg in ("--set", setting)]
    return [
        sys.executable,
        "-m",
        "kagglecifar",
        "tune",
        "mlp",
        "--preset",
        "cpu",
        "--set",
        "batch_size=16",
        "--set",
        "augment=none",
        *base,
        "--space",
        str(space_file),
        "--data-dir",
        str(data_dir),
        "--runs-dir",
        str(runs),
        "--device",
        "cpu",
        *options,
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


@pytest.mark.slow
def test_a_killed_search_continues_where_it_stopped(tmp_path):
    data_dir = make_cache(tmp_path / "data", count=600)
    # Rates that always learn: with the default space's top (0.2) a sampled trial sometimes diverged and was
    # pruned, which this test (about kills, not sampling) must not depend on.
    space = write_space(tmp_path / "space.yaml", "lr: {low: 0.005, high: 0.05, log: true}\n")
    command = tune_command(
        data_dir, tmp_path / "runs", space, "--set", "epochs=6", "--trials", "3", "--pruner", "none", "--name", "k"
    )
    tune_dir = tmp_path / "runs" / "tune-k"
    victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        # Trial 1 is one epoch in; it stays RUNNING for five more and its end-of-run evaluation (seconds).
        while not (tune_dir / "trial-0001" / "last.pt").is_file():
            assert victim.poll() is None, "the search ended before it could be killed"
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)  # no clean-up at all, as in a power cut
    finally:
        victim.kill()
        victim.wait()
    first_epoch = (tune_dir / "trial-0001" / "metrics.csv").read_text().splitlines()[:2]
    assert [t.state for t in load(tune_dir, "k").trials][:2] == [STATES.COMPLETE, STATES.RUNNING]

    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"trial 1: its process {victim.pid} is gone" in done.stdout
    trials = load(tune_dir, "k").trials
    assert sum(t.state == STATES.COMPLETE for t in trials) == 3 and trials[1].state == STATES.FAIL
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == 1]
    assert retry.state == STATES.COMPLETE and retry.params == trials[1].params
    assert retry.user_attrs["run"] == str(tune_dir / "trial-0001")
    # The retry resumed trial 1's folder: its first epoch is the killed process's (timings too), then it went on.
    rows = (tune_dir / "trial-0001" / "metrics.csv").read_text().splitlines()
    assert rows[:2] == first_epoch and len(rows) == 7
    # Trial 2 was the retry (in trial-0001/), trial 3 the third new one.
    assert sorted(p.name for p in tune_dir.glob("trial-*")) == ["trial-0000", "trial-0001", "trial-0003"]


@pytest.mark.slow
def test_two_worker_processes_share_one_sqlite_study(data_dir, tmp_path):
    # A fresh study: both race to create the database, and both want the queued preset trial first.
    command = tune_command(
        data_dir,
        tmp_path / "runs",
        write_space(tmp_path / "space.yaml"),
        "--set",
        "epochs=2",
        "--timeout",
        "5",
        "--name",
        "shared",
    )
    workers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    tune_dir = tmp_path / "runs" / "tune-shared"
    trials = load(tune_dir, "shared").trials
    assert {t.user_attrs["worker"]["pid"] for t in trials if "worker" in t.user_attrs} == {w.pid for w in workers}
    assert not [t for t in trials if t.state == STATES.RUNNING]
    started = [t for t in trials if "worker" in t.user_attrs and "retry_of" not in t.user_attrs]
    assert sum(bool(t.user_attrs.get("preset_values")) for t in started) == 1  # the queued trial ran once
    finished = [t for t in trials if t.state in (STATES.COMPLETE, STATES.PRUNED)]
    folders = [t.user_attrs["run"] for t in finished]
    assert len(set(folders)) == len(folders)  # no trial was trained twice
    for trial in finished:
        assert rundir.read_result(trial.user_attrs["run"])["stopped_reason"] in tune.FINISHED


@pytest.mark.slow
def test_sqlite_workers_never_take_one_queued_trial_twice(tmp_path):
    """The storage alone, many quick trials: pysqlite's deferred locking lets two workers pop one queued trial."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="q", storage=tune_storage.open_storage(url), direction="maximize")
    for i in range(15):
        study.enqueue_trial({"x": i})
    script = (
        "import optuna\nfrom kagglecifar.tune import storage as tune_storage\n"
        "optuna.logging.set_verbosity(optuna.logging.ERROR)\n"
        f"study = optuna.load_study(study_name='q', storage=tune_storage.open_storage({url!r}))\n"
        "study.optimize(lambda t: t.suggest_int('x', 0, 100), n_trials=10)\n"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(3)
    ]
    errors = [worker.communicate(timeout=300)[1] for worker in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], errors
    trials = optuna.load_study(study_name="q", storage=url).trials
    assert len(trials) == 30 and all(t.state == STATES.COMPLETE for t in trials)


# ---- spaces and errors ---------------------------------------------------------------------------------


def test_default_space_per_family_and_grid_points():
    assert space.default_space_path("simplecnn").name == "baselines.yaml"
    assert space.default_space_path("resnet18").name == "resnet.yaml"
    dimensions = {d.key: d for d in space.read_space(space.default_space_path("simplecnn"))}
    assert {"lr", "weight_decay", "label_smoothing", "width", "dropout", "augment", "batch_size", "epochs"} <= set(
        dimensions
    )
    assert dimensions["epochs"].kind is int and dimensions["epochs"].grid() == [4, 8, 12]
    assert dimensions["lr"].log and dimensions["lr"].grid()[1] == pytest.approx((3e-4 * 0.01) ** 0.5)
    assert dimensions["augment"].grid() == ["none", "light", "standard", "strong"]


@pytest.mark.parametrize("preset", train_config.preset_names())
def test_every_preset_s_own_recipe_lies_inside_its_model_s_default_space(preset):
    """Otherwise `tune --preset P` searches elsewhere and its first trial is not the preset's recipe."""
    base = make_config(preset=preset)
    for dimension in space.read_space(space.default_space_path(base.recipe.model)):
        value = tune._recipe_value(base, dimension.key)
        assert dimension.contains(value), (preset, dimension.key, value)


def test_a_base_recipe_outside_the_space_is_said_and_its_first_trial_sampled(data_dir, tmp_path):
    said = []
    space_file = write_space(
        tmp_path / "s.yaml", "lr: {low: 0.01, high: 0.02}\nlabel_smoothing: {low: 0.0, high: 0.1}\n"
    )
    tune.tune(
        "mlp",
        preset="cpu",
        sets=[*SETS, "epochs=1"],
        space_file=space_file,
        trials=1,
        runs_dir=tmp_path,
        data_dir=data_dir,
        device="cpu",
        echo=said.append,
    )
    assert "tune: the base recipe's lr 0.05 lies outside the space; its first trial samples it instead" in said
    (first,) = load(tmp_path / "tune-mlp", "mlp").trials
    assert 0.01 <= first.params["lr"] <= 0.02 and first.params["label_smoothing"] == 0.0  # SETS' value, inside


@pytest.mark.slow
def test_grid_sampler_runs_each_point_once(data_dir, tmp_path):
    space_file = write_space(tmp_path / "s.yaml", "lr: {choices: [0.01, 0.02]}\nepochs: {choices: [1]}\n")
    result = tune.tune(
        "mlp",
        preset="cpu",
        sets=SETS,
        space_file=space_file,
        sampler="grid",
        trials=5,
        runs_dir=tmp_path,
        data_dir=data_dir,
        device="cpu",
        echo=lambda line: None,
    )
    trials = load(tmp_path / "tune-mlp", "mlp").trials
    assert result.counts["complete"] == 2 and sorted(t.params["lr"] for t in trials) == [0.01, 0.02]


@pytest.mark.parametrize(
    "text,message",
    [
        ("lr: {low: 0.1, high: 0.01}", "lr: low (0.1) must be below high (0.01)"),
        ("lr: {low: 0, high: 1, log: true}", "lr: a log range needs low > 0"),
        ("device: {choices: [cpu]}", "device: not a searchable recipe option; choose from width, dropout"),
        ("model: {choices: [mlp]}", "model: not a searchable recipe option"),
        ("nosuch: {low: 1, high: 2}", "nosuch: not a searchable recipe option"),
        ("augment: {low: 1, high: 2}", "augment: a str option takes {choices: [...]}"),
        ("epochs: {choices: [two]}", "epochs: expected an integer"),
        ("lr: {low: 0.1}", "lr: a range needs both low and high"),
        ("lr: [0.1, 0.2]", "lr: expected {low: A, high: B} or {choices: [...]}"),
        ("augment: {choices: [strng]}", "--augment strng: not a preset"),
    ],
)
def test_bad_space_files_give_one_clear_line(tmp_path, run_cli, text, message):
    code, _, err = run_cli(
        "tune",
        "mlp",
        "--preset",
        "cpu",
        "--space",
        write_space(tmp_path / "s.yaml", text),
        "--trials",
        "1",
        "--device",
        "cpu",
        "--runs-dir",
        tmp_path / "runs",
    )
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--trials", "1", "--sampler", "cmaes"], "--sampler cmaes: choose tpe, random, grid"),
        (["--trials", "1", "--pruner", "sha"], "--pruner sha: choose median, hyperband, none"),
        ([], "give --trials N or --timeout SECONDS"),
        (["--trials", "1", "--set", "val_fraction=0"], "trials are scored on the validation split"),
        (
            ["--trials", "1", "--storage", "postgresql://me:s3cret@db-host/optuna"],
            "--storage postgresql://me:***@db-host",
        ),
        (["--trials", "1", "--storage", "nonsense"], "--storage nonsense"),
    ],
)
def test_bad_options_give_one_clear_line(tmp_path, run_cli, args, message):
    code, out, err = run_cli("tune", "mlp", "--preset", "cpu", "--device", "cpu", "--runs-dir", tmp_path, *args)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert "s3cret" not in out + err


@pytest.mark.slow
def test_a_study_refuses_another_base_recipe(searched, data_dir):
    _, runs, _ = searched
    with pytest.raises(KaggleCifarError, match="this study searches another recipe \\(differs in epochs\\)"):
        tune.tune(
            "mlp",
            preset="cpu",
            sets=[*SETS, "epochs=5"],
            space_file=write_space(runs.parent / "space.yaml"),
            trials=4,
            name="p",
            runs_dir=runs,
            data_dir=data_dir,
            device="cpu",
        )


def test_a_diverged_trial_fails_at_once_and_is_no_result(data_dir, tmp_path):
    space_file = write_space(tmp_path / "s.yaml", "lr: {choices: [1.0e+6]}\n")  # the loss overflows at once
    result = tune.tune(
        "mlp",
        preset="cpu",
        sets=SETS,
        space_file=space_file,
        trials=1,
        pruner="none",
        runs_dir=tmp_path,
        data_dir=data_dir,
        device="cpu",
        echo=lambda line: None,
    )
    (trial,) = load(tmp_path / "tune-mlp", "mlp").trials
    assert result.counts["fail"] == 1 and result.counts["complete"] == result.counts["pruned"] == 0
    assert trial.state.name == "FAIL" and trial.value is None and result.best_number is None
    assert trial.user_attrs["diverged"].startswith("training diverged at epoch 1, step ")
    assert trial.user_attrs["epochs"] == 0  # stopped inside its first epoch, nothing saved
    assert "failed: training diverged" in (tmp_path / "tune-mlp" / "results.csv").read_text()


def test_the_on_epoch_hook_stops_a_run_as_pruned(data_dir, tmp_path):
    seen = []
    result = train(small_config(data_dir, tmp_path, epochs=3), on_epoch=lambda row: seen.append(row) or True)
    assert result.stopped_reason == "pruned" and result.epochs_run == 1
    assert [row["epoch"] for row in seen] == [1] and seen[0]["val_acc"] is not None
    assert (result.run_dir / "last.pt").is_file() and rundir.read_result(result.run_dir)["stopped_reason"] == "pruned"
