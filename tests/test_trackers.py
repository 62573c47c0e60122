"""train --log tensorboard|wandb|mlflow: what each tracker holds after a run, read back with its own tools (W&B
offline, MLflow's file store: no network); nothing secret logged; a missing package is one clear line."""

import importlib.util
import json
from pathlib import Path

import pytest
from test_train import make_cache

import kagglecifar

pytestmark = pytest.mark.usefixtures("one_torch_thread")

INSTALLED = [name for name in ("tensorboard", "wandb", "mlflow") if importlib.util.find_spec(name) is not None]
SECRET = "kc-secret-key-0123456789"
EPOCHS = 2


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """One run logged to every installed tracker, with a Kaggle key in the environment."""
    if not INSTALLED:
        pytest.skip("no tracker package installed")
    data_dir = make_cache(tmp_path_factory.mktemp("data"))
    runs_dir = tmp_path_factory.mktemp("runs")
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "KAGGLE_KEY": SECRET, "KAGGLE_USERNAME": "someone"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = kagglecifar.train(
            "mlp",
            preset="cpu",
            epochs=EPOCHS,
            batch_size=32,
            lr=0.05,
            workers=0,
            device="cpu",
            data_dir=data_dir,
            runs_dir=runs_dir,
            name="logged",
            log=INSTALLED,
        )
    return result, runs_dir


def test_tensorboard_holds_step_and_epoch_scalars_images_and_config(logged_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, _ = logged_run
    events = EventAccumulator(str(result.run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"val_acc", "val_loss", "train_loss", "train_acc", "step/loss", "step/lr"} <= set(tags["scalars"])
    val_acc = events.Scalars("val_acc")
    assert [e.step for e in val_acc] == list(range(1, EPOCHS + 1))
    assert max(e.value for e in val_acc) == pytest.approx(result.best_val_accuracy)
    steps = load_steps(result.run_dir)
    assert [e.step for e in events.Scalars("step/loss")] == list(range(1, steps + 1))  # every step
    assert {"curves", "confusion_matrix"} <= set(tags["images"])
    assert {"config", "result"} <= {tag.split("/")[0] for tag in tags["tensors"]}


def test_wandb_offline_run_holds_the_metrics_summary_and_images(logged_run):
    pytest.importorskip("wandb")
    result, _ = logged_run
    (run_file,) = (result.run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    history, summary, config = [], {}, {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
        elif kind == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "run":
            config = {item.key: json.loads(item.value_json) for item in record.run.config.update}
    epochs = [row for row in history if "val_acc" in row]
    assert [json.loads(row["epoch"]) for row in epochs] == list(range(1, EPOCHS + 1))
    assert sum("step/loss" in row for row in history) == load_steps(result.run_dir)
    assert summary["best_val_accuracy"] == pytest.approx(result.best_val_accuracy)
    assert summary["stopped_reason"] == "completed"
    assert config["recipe"]["model"] == "mlp" and config["recipe"]["epochs"] == EPOCHS
    assert len(list((result.run_dir / "wandb").glob("offline-run-*/files/media/images/*.png"))) == 2


def test_mlflow_file_store_run_holds_params_metrics_and_artifacts(logged_run):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    result, runs_dir = logged_run
    client = MlflowClient(tracking_uri=(runs_dir / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("kagglecifar").experiment_id])
    assert run.info.run_name == "logged" and run.info.status == "FINISHED"
    assert run.data.params["recipe.model"] == "mlp" and run.data.params["recipe.epochs"] == str(EPOCHS)
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert [m.step for m in history] == list(range(1, EPOCHS + 1))
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(result.best_val_accuracy)
    assert len(client.get_metric_history(run.info.run_id, "step_loss")) == load_steps(result.run_dir)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"curves.png", "confusion_matrix.png"}


def test_nothing_secret_is_logged(logged_run):
    result, runs_dir = logged_run
    files = [p for p in Path(runs_dir).rglob("*") if p.is_file()]
    assert len(files) > 10
    leaked = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert leaked == []


def test_a_missing_tracker_package_is_one_line_naming_the_install(tmp_path, run_cli, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    code, out, err = run_cli("train", "mlp", "--log", "wandb", "--device", "cpu", "--runs-dir", tmp_path)
    assert code == 1
    assert err.strip() == (
        "kagglecifar: error: --log wandb: the wandb package is not installed; "
        "pip install 'kagglecifar[wandb]' (or pip install wandb)"
    )
    code, out, err = run_cli("train", "mlp", "--log", "tensorbord", "--device", "cpu", "--runs-dir", tmp_path)
    assert code == 1 and err.strip() == "kagglecifar: error: --log tensorbord: choose tensorboard, wandb or mlflow"
    assert list(tmp_path.iterdir()) == []


def load_steps(run_dir) -> int:
    from kagglecifar.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / "last.pt")["train_state"]["progress"]["step"]


def wandb_records(path):
    """The records of a W&B .wandb file (its LevelDB-style log: 7-byte header, 32 KiB blocks of chunks with a
    4-byte checksum, 2-byte length and 1-byte type: full, first, middle, last)."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    position, block, pending = 7, 32768, b""
    while position + 7 <= len(data):
        if block - position % block < 7:
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4 : position + 6], "little"), data[position + 6]
        payload, position = data[position + 7 : position + 7 + length], position + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + payload)
            pending = b""
            yield record
        elif kind in (2, 3):
            pending += payload
