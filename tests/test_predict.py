import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from kagglecifar.cache import write_split
from kagglecifar.checkpoint import save_checkpoint
from kagglecifar.errors import KaggleCifarError
from kagglecifar.inference import gating
from kagglecifar.inference.evaluate import evaluate
from kagglecifar.inference.predict import load_probs, predict, predict_images, save_probs
from kagglecifar.inference.tta import tta_views
from kagglecifar.models import create_model

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def images(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), np.uint8)


def make_run(folder, seed=0, classes=CLASSES, val_ids=()):
    torch.manual_seed(seed)
    model = create_model("mlp", num_classes=len(classes), width=0.125)
    save_checkpoint(
        {
            "model": "mlp",
            "model_kwargs": {"width": 0.125},
            "classes": list(classes),
            "state_dict": model.state_dict(),
            "val_ids": list(val_ids),
            "epoch": 1,
            "val_accuracy": None,
            "config": {},
        },
        folder / "best.pt",
    )
    return folder, model.eval()


@pytest.fixture
def data(tmp_path):
    """A test cache of 12 ids (two undecodable) and a sampleSubmission.csv listing them in another order."""
    ids = np.array([10, 3, 7, 1, 12, 5, 8, 2, 11, 4, 9, 6])
    bad = np.isin(ids, [7, 11])
    write_split(tmp_path / "data", "test", images(12), ids, CLASSES, bad=bad)
    sample_order = [5, 1, 12, 3, 7, 2, 11, 9, 4, 10, 6, 8]
    (tmp_path / "data" / "sampleSubmission.csv").write_text("id,label\n" + "".join(f"{i},cat\n" for i in sample_order))
    return tmp_path / "data", sample_order


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_tta_views_shapes_and_content():
    x = torch.rand(2, 3, 32, 32)
    for mode, count in (("none", 1), ("flip", 2), ("shift", 10)):
        views = list(tta_views(x, mode))
        assert len(views) == count and all(v.shape == x.shape for v in views)
    views = list(tta_views(x, "shift"))
    assert torch.equal(views[1], x.flip(3))
    assert torch.equal(views[2][:, :, 2:], x[:, :, :30])  # cropped 2 px up: content moves down
    assert torch.equal(views[2][:, :, :2], x[:, :, 1:3].flip(2))  # reflect padding fills the top
    assert torch.equal(views[3], views[2].flip(3))
    with pytest.raises(KaggleCifarError, match="--tta spin"):
        list(tta_views(x, "spin"))


def reference_shift_views(batch):
    """The shift views built independently with numpy: reflect-pad 2, crop at 5 offsets, each flipped too."""
    padded = np.pad(batch, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    views = []
    for dy, dx in ((0, 0), (-2, 0), (2, 0), (0, -2), (0, 2)):
        crop = padded[:, :, 2 + dy : 34 + dy, 2 + dx : 34 + dx]
        views += [crop, crop[..., ::-1]]
    return views


def test_tta_probabilities_equal_a_hand_computation():
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).eval()  # not flip-invariant
    pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10)).eval()  # flip-invariant
    batch = images(5, seed=1)
    x = batch.transpose(0, 3, 1, 2).astype(np.float32) / 255
    weight, bias = linear[1].weight.detach().numpy(), linear[1].bias.detach().numpy()
    view_probs = [softmax(v.reshape(5, -1) @ weight.T + bias) for v in reference_shift_views(x)]

    out = predict_images([(linear, 1.0)], batch, ["none", "flip", "shift"], 10, batch_size=2)
    np.testing.assert_allclose(out["none"], view_probs[0], atol=1e-5)
    np.testing.assert_allclose(out["flip"], (view_probs[0] + view_probs[1]) / 2, atol=1e-5)
    np.testing.assert_allclose(out["shift"], np.mean(view_probs, axis=0), atol=1e-5)
    assert not np.allclose(out["none"], out["flip"], atol=1e-4)

    invariant = predict_images([(pooled, 1.0)], batch, ["none", "flip"], 10)
    np.testing.assert_allclose(invariant["none"], invariant["flip"], atol=1e-6)


def test_ensemble_averages_with_weights(tmp_path, data):
    data_dir, _ = data
    run_a, _ = make_run(tmp_path / "a", seed=1)
    run_b, _ = make_run(tmp_path / "b", seed=2)
    a = predict([run_a], data_dir, tta="flip", tta_fraction=1)  # every view: an ensemble is then linear
    b = predict([run_b], data_dir, tta="flip", tta_fraction=1)
    both = predict([run_a, run_b / "best.pt"], data_dir, tta="flip", weights=[2, 1], tta_fraction=1)
    good = ~both.bad
    np.testing.assert_allclose(both.probs[good], (2 * a.probs[good] + b.probs[good]) / 3, atol=1e-6)
    np.testing.assert_allclose(both.probs.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(both.confidence[good], both.probs[good].max(axis=1))

    saved = save_probs(a, tmp_path / "a.npz")  # an earlier prediction joins the ensemble
    mixed = predict([saved, run_b], data_dir, tta="flip", weights=[2, 1], tta_fraction=1)
    np.testing.assert_allclose(mixed.probs, both.probs, atol=1e-6)

    with pytest.raises(KaggleCifarError, match="--weights: 1 weights for 2"):
        predict([run_a, run_b], data_dir, weights=[1])


def test_ensemble_refuses_different_classes(tmp_path, data):
    data_dir, _ = data
    run_a, _ = make_run(tmp_path / "a")
    run_b, _ = make_run(tmp_path / "b", classes=list(reversed(CLASSES)))
    with pytest.raises(KaggleCifarError, match="b/best.pt: its classes .* differ"):
        predict([run_a, run_b], data_dir)


def test_bad_ids_get_prior_and_zero_confidence(tmp_path, data):
    data_dir, _ = data
    run, model = make_run(tmp_path / "run")
    p = predict([run], data_dir)
    assert p.ids.tolist() == list(range(1, 13))
    assert p.ids[p.bad].tolist() == [7, 11]
    prior = p.probs[~p.bad].mean(axis=0)
    np.testing.assert_allclose(p.probs[p.bad], [prior, prior], atol=1e-6)
    assert p.fallback == CLASSES[prior.argmax()] and set(p.labels()[p.bad]) == {p.fallback}
    assert p.confidence[p.bad].tolist() == [0, 0]
    with torch.no_grad():  # the decodable rows are the model's own softmax
        x = torch.from_numpy(images(12)[np.argsort([10, 3, 7, 1, 12, 5, 8, 2, 11, 4, 9, 6])]).permute(0, 3, 1, 2)
        expected = model(x.float() / 255).softmax(1).numpy()
    np.testing.assert_allclose(p.probs[~p.bad], expected[~p.bad], atol=1e-5)
    assert p.ood_count(1.01) == 10 and p.ood_count(0.0) == 0


def test_cli_predict_writes_rows_in_sample_order(tmp_path, data, run_cli, monkeypatch):
    data_dir, sample_order = data
    run, _ = make_run(tmp_path / "runs" / "tiny")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(
        "predict", run, "--data-dir", data_dir, "--tta", "shift", "--save-probs", "probs.csv", "--ood-threshold", "0.99"
    )
    assert code == 0, err
    csv_path = tmp_path / "submissions" / "tiny-shift.csv"
    table = pd.read_csv(csv_path)
    assert table["id"].tolist() == sample_order and set(table["label"]) <= set(CLASSES)
    probs = pd.read_csv(tmp_path / "probs.csv")
    assert list(probs.columns) == ["id", "confidence", "bad", "views", *CLASSES] and len(probs) == 12
    fallback = table.set_index("id")["label"][7]
    assert table.set_index("id")["label"][11] == fallback
    report = (tmp_path / "submissions" / "tiny-shift.bad-ids.txt").read_text().splitlines()
    assert report[1:] == ["7", "11"] and f"'{fallback}'" in report[0]
    line = out.strip().splitlines()[-1]
    gated = math.ceil(gating.DEFAULT_FRACTION * 10)  # of the 10 decodable images
    shown = f"TTA shift (10 views on the {gated} least confident of 10 images, 1 on the rest)"
    assert line.startswith(f"predict: 12 rows, {shown}, 2 undecodable ids") and str(csv_path.name) in line
    assert probs["views"].tolist().count(10) == gated and probs["views"][probs["bad"] == 1].tolist() == [1, 1]
    assert "10 look out-of-distribution (confidence < 0.99)" in line


def test_cli_predict_refuses_to_overwrite(tmp_path, data, run_cli):
    data_dir, _ = data
    run, _ = make_run(tmp_path / "run")
    out = tmp_path / "sub.csv"
    out.write_text("precious")
    code, _, err = run_cli("predict", run, "--data-dir", data_dir, "--out", out)
    assert code == 1 and "already exists; pass --force" in err and out.read_text() == "precious"
    code, _, err = run_cli("predict", run, "--data-dir", data_dir, "--out", out, "--force", "--tta", "none")
    assert code == 0, err
    assert out.read_text().startswith("id,label\n5,")


def test_cli_predict_needs_every_sample_id_in_the_cache(tmp_path, data, run_cli):
    data_dir, sample_order = data
    run, _ = make_run(tmp_path / "run")
    (data_dir / "sampleSubmission.csv").write_text("id,label\n" + "".join(f"{i},cat\n" for i in sample_order + [99]))
    code, _, err = run_cli("predict", run, "--data-dir", data_dir, "--out", tmp_path / "s.csv")
    assert code == 1 and "ids without a prediction: 1, e.g. 99" in err
    assert not (tmp_path / "s.csv").exists()


def test_probs_round_trip(tmp_path, data):
    data_dir, _ = data
    run, _ = make_run(tmp_path / "run")
    p = predict([run], data_dir, tta="flip")
    back = load_probs(save_probs(p, tmp_path / "p.npz"))
    assert back.classes == CLASSES and back.tta == "flip"
    np.testing.assert_array_equal(back.probs, p.probs)
    np.testing.assert_array_equal(back.bad, p.bad)
    with pytest.raises(KaggleCifarError, match="already exists"):
        save_probs(p, tmp_path / "p.npz")
    with pytest.raises(KaggleCifarError, match="use a .npz or .csv"):
        save_probs(p, tmp_path / "p.json")


def test_evaluate_on_a_tiny_run(tmp_path, run_cli):
    train_ids = np.arange(1, 21)
    pixels = images(20, seed=3)
    run, model = make_run(tmp_path / "run", val_ids=[2, 4, 6, 8, 10, 12])
    with torch.no_grad():
        predicted = model(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255).argmax(1).numpy()
    labels = predicted.copy()
    labels[[3, 5]] = (labels[[3, 5]] + 1) % 10  # ids 4 and 6: the model is wrong
    bad = train_ids == 12  # undecodable: left out
    write_split(tmp_path / "data", "train", pixels, train_ids, CLASSES, labels=labels, bad=bad)

    report = evaluate(run, tmp_path / "data", ("flip",))
    assert report.count == 5 and report.overall["none"] == pytest.approx(3 / 5)
    assert list(report.overall) == [
        "none",
        "flip",
        f"flip@{gating.DEFAULT_FRACTION:g}",
    ]  # flip, then flip gated at the default fraction
    wrong_class = labels[3]
    assert report.per_class["none"][wrong_class] < 1
    assert report.confusion_path == run / "confusion_matrix.png" and report.confusion_path.stat().st_size > 1000

    code, out, err = run_cli("evaluate", run, "--data-dir", tmp_path / "data")
    assert code == 0, err
    assert "overall" in out and "shift" in out.splitlines()[0]
    assert out.strip().splitlines()[-1].startswith("evaluate: 5 validation images, accuracy none 60.00%, flip ")


def test_evaluate_needs_a_validation_split(tmp_path, run_cli):
    run, _ = make_run(tmp_path / "run", val_ids=[])
    write_split(tmp_path / "data", "train", images(4), [1, 2, 3, 4], CLASSES, labels=[0, 1, 2, 3])
    code, _, err = run_cli("evaluate", run, "--data-dir", tmp_path / "data")
    assert code == 1 and "no validation split" in err and "best.pt" in err


def test_translate_views_are_airbench_s_weighted_one_pixel_shifts():
    from kagglecifar.inference.tta import MODES

    x = torch.rand(2, 3, 32, 32)
    views = list(tta_views(x, "translate"))
    assert len(views) == 6 and torch.equal(views[1], x.flip(3))
    assert torch.equal(views[2][:, :, 1:, 1:], x[:, :, :31, :31])  # content moves 1 px down-right
    assert torch.equal(views[4][:, :, :31, :31], x[:, :, 1:, 1:])  # and 1 px up-left
    assert torch.equal(views[3], views[2].flip(3)) and torch.equal(views[5], views[4].flip(3))
    for mode, weights in MODES.items():
        assert sum(weights.values()) == pytest.approx(1.0), mode
    assert list(MODES["translate"].values()) == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]


def test_the_tta_help_names_every_mode_with_its_view_count(run_cli):
    import re

    from kagglecifar.inference.tta import TTA_VIEWS

    for command in ("predict", "evaluate", "run"):
        code, out, _ = run_cli(command, "--help")
        shown = " ".join(out.split())
        assert code == 0
        for mode, views in TTA_VIEWS.items():
            assert re.search(rf"\b{mode} \([^)]*\b{views} views?\)", shown), (command, mode)


def test_modes_asked_together_give_what_each_gives_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4)).eval()
    images = np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    modes = ["none", "flip", "shift", "translate"]
    together = predict_images([(model, 1.0)], images, modes, 4, batch_size=3, progress=False)
    for mode in modes:
        alone = predict_images([(model, 1.0)], images, [mode], 4, batch_size=3, progress=False)[mode]
        np.testing.assert_allclose(together[mode], alone, rtol=1e-6)
        np.testing.assert_allclose(alone.sum(axis=1), 1.0, rtol=1e-5)


def test_the_out_of_distribution_threshold_follows_the_class_count():
    from kagglecifar.inference.predict import Predictions, default_ood_threshold

    assert default_ood_threshold(10) == 0.5 and default_ood_threshold(100) == pytest.approx(0.05)
    confidence = np.array([0.04, 0.3, 0.6], np.float32)
    for classes, expected in ((10, 2), (100, 1)):
        p = Predictions(
            np.arange(3),
            np.zeros((3, classes), np.float32),
            confidence,
            np.zeros(3, bool),
            [f"c{i}" for i in range(classes)],
        )
        assert p.ood_count() == expected and p.ood_count(0.7) == 3


def test_a_cpu_with_bf16_arithmetic_predicts_and_trains_in_bf16(monkeypatch):
    """KAGGLECIFAR_CPU_BF16=1 stands for a CPU with avx512_bf16/AMX: predict's probabilities stay float32 and
    sum to 1, close to fp32's, and a training step under the plan's autocast stays finite."""
    from kagglecifar.device import device_plan
    from kagglecifar.training.step import training_step

    torch.manual_seed(0)
    model = create_model("airbench94", num_classes=10, width=0.25).eval()
    batch = images(16, seed=2)
    model.init_from_data(torch.from_numpy(batch))
    fp32 = predict_images([(model, 1.0)], batch, ["flip"], 10, device=torch.device("cpu"), amp=True)["flip"]
    monkeypatch.setenv("KAGGLECIFAR_CPU_BF16", "1")
    plan = device_plan("cpu")
    assert plan.precision == "bf16"
    bf16 = predict_images([(model, 1.0)], batch, ["flip"], 10, device=torch.device("cpu"), amp=True)["flip"]
    assert bf16.dtype == np.float32 and np.allclose(bf16.sum(1), 1, atol=1e-5)
    assert not np.array_equal(bf16, fp32)  # the autocast did run in bf16
    np.testing.assert_allclose(bf16, fp32, atol=0.05)

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div(255)
    losses = [
        float(training_step(model, optimizer, x, torch.arange(16) % 10, 0.2, lambda: plan.autocast(True))[1].detach())
        for _ in range(3)
    ]
    assert all(np.isfinite(losses)) and all(p.grad.isfinite().all() for p in model.parameters() if p.grad is not None)
