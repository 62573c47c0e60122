"""Confidence-gated TTA (inference/gating.py, predict.predict_gated): which images get every view, what they
get, fraction 1 as plain TTA, ensembles, saved probabilities, evaluate's gated columns, option checks."""

import json

import numpy as np
import pytest
import torch
from test_predict import CLASSES, images, make_run

from kagglecifar import rundir
from kagglecifar.cache import write_split
from kagglecifar.errors import KaggleCifarError
from kagglecifar.inference import gating
from kagglecifar.inference.evaluate import evaluate
from kagglecifar.inference.predict import load_probs, predict, predict_gated, predict_images, save_probs


@pytest.fixture
def data(tmp_path):
    """A test cache of 40 ids, three of them undecodable."""
    ids = np.arange(1, 41)
    write_split(tmp_path / "data", "test", images(40, seed=5), ids, CLASSES, bad=np.isin(ids, [3, 17, 30]))
    (tmp_path / "data" / "sampleSubmission.csv").write_text("id,label\n" + "".join(f"{i},cat\n" for i in ids))
    return tmp_path / "data"


def test_gating_picks_exactly_the_least_confident_fraction():
    probs = np.array(
        [
            [0.50, 0.45, 0.05],  # top 0.50, margin 0.05
            [0.40, 0.30, 0.30],  # top 0.40, margin 0.10
            [0.90, 0.05, 0.05],  # sure
            [0.60, 0.20, 0.20],  # top 0.60, margin 0.40
            [0.34, 0.33, 0.33],  # top 0.34, margin 0.01
        ],
        np.float32,
    )
    assert gating.least_confident(probs, 0.4, "margin").tolist() == [0, 4]
    assert gating.least_confident(probs, 0.4, "top").tolist() == [1, 4]
    assert gating.least_confident(probs, 0.6, "margin").tolist() == [0, 1, 4]  # ceil(3.0000000000000004) is 3
    assert gating.least_confident(probs, 0.5, "margin").tolist() == [0, 1, 4]  # 2.5 rounds up
    assert gating.least_confident(probs, 1.0, "top").tolist() == [0, 1, 2, 3, 4]
    eligible = np.array([True, True, True, True, False])  # an undecodable image is never chosen
    assert gating.least_confident(probs, 0.5, "margin", eligible).tolist() == [0, 1]
    assert gating.gated_count(0.1, 30) == 3 and gating.gated_count(0.25, 10) == 3 and gating.gated_count(1e-9, 7) == 1


def test_each_ranking_orders_the_rows_by_its_own_measure():
    probs = np.array(
        [
            [0.30, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10],  # spread out: p2/p1 0.33, margin 0.20, p2 0.10
            [0.55, 0.40, 0.05, 0.00, 0.00, 0.00, 0.00, 0.00],  # cat or dog: p2/p1 0.73, margin 0.15, p2 0.40
            [0.20, 0.16, 0.16, 0.16, 0.16, 0.16, 0.00, 0.00],  # spread out: p2/p1 0.80, margin 0.04, p2 0.16
            [0.90, 0.10, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],  # sure: p2/p1 0.11
            [0.50, 0.30, 0.20, 0.00, 0.00, 0.00, 0.00, 0.00],  # p2/p1 0.60, margin 0.20, p2 0.30
        ],
        np.float32,
    )
    np.testing.assert_allclose(gating.confidence(probs, "odds"), [2 / 3, 0.15 / 0.55, 0.2, 0.8 / 0.9, 0.4], atol=1e-6)
    np.testing.assert_allclose(gating.confidence(probs, "runner-up"), [0.9, 0.6, 0.84, 0.9, 0.7], atol=1e-6)
    assert gating.least_confident(probs, 0.4, "odds").tolist() == [1, 2]
    assert gating.least_confident(probs, 0.6, "odds").tolist() == [1, 2, 4]
    assert gating.least_confident(probs, 0.2, "margin").tolist() == [2]
    assert gating.least_confident(probs, 0.4, "runner-up").tolist() == [1, 4]
    assert gating.least_confident(probs, 0.6, "runner-up").tolist() == [1, 2, 4]
    assert gating.least_confident(probs, 0.2, "top").tolist() == [2]
    # by default a split between two classes gets the views before probabilities spread over many (junk-like)
    assert gating.least_confident(probs, 0.2).tolist() == [1]
    assert gating.least_confident(probs, 0.4).tolist() == [1, 4]
    combined = gating.combine(probs, probs[::-1].copy(), "flip", 0.2)
    assert combined.views.tolist() == [1, 2, 1, 1, 1]
    assert np.array_equal(combined.probs[1], probs[::-1][1]) and np.array_equal(combined.probs[0], probs[0])


@pytest.mark.parametrize("value", [0, -0.5, 1.5, float("nan"), float("inf")])
def test_the_fraction_must_be_a_share_above_0(value):
    with pytest.raises(
        KaggleCifarError, match=r"--tta-fraction .*: expected a share of the images above 0 and at most 1"
    ):
        gating.check_fraction(value)
    assert gating.check_fraction(1) == 1.0 and gating.check_fraction(0.01) == 0.01


def test_fraction_one_is_plain_tta_exactly(tmp_path, data):
    run, model = make_run(tmp_path / "run")
    test_images = images(40, seed=5)
    for mode in ("flip", "translate"):
        plain = predict_images([(model, 1.0)], test_images, [mode], 10)[mode]
        gated = predict_gated([(model, 1.0)], test_images, mode, 10, 1.0)
        np.testing.assert_array_equal(gated.probs, plain)
        assert gated.views.tolist() == [len(gating.MODES[mode])] * 40
    p = predict([run], data, tta="flip", tta_fraction=1, backend="eager")  # as predict ran before gating
    good = ~p.bad
    np.testing.assert_array_equal(
        p.probs[good], predict_images([(model, 1.0)], test_images, ["flip"], 10)["flip"][good]
    )
    assert p.views.tolist() == [2] * 40 and p.tta_fraction == 1


def test_the_chosen_rows_get_every_view_the_others_the_image_alone():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)).eval()  # not flip-invariant
    batch = images(16, seed=2)
    every = predict_images([(model, 1.0)], batch, ["none", "shift"], 10, batch_size=4)
    eligible = np.ones(16, bool)
    eligible[[0, 5]] = False
    gated = predict_gated([(model, 1.0)], batch, "shift", 10, 0.25, eligible=eligible, batch_size=4)
    chosen = gating.least_confident(every["none"], 0.25, eligible=eligible)
    assert len(chosen) == 4 and not set(chosen) & {0, 5}  # ceil(0.25 x 14)
    np.testing.assert_allclose(gated.probs[chosen], every["shift"][chosen], atol=1e-6)
    rest = np.setdiff1d(np.arange(16), chosen)
    np.testing.assert_array_equal(gated.probs[rest], every["none"][rest])
    assert np.flatnonzero(gated.views == 10).tolist() == chosen.tolist() and set(gated.views[rest]) == {1}
    combined = gating.combine(every["none"], every["shift"], "shift", 0.25, eligible=eligible)  # evaluate's way
    np.testing.assert_allclose(combined.probs, gated.probs, atol=1e-6)
    np.testing.assert_array_equal(combined.views, gated.views)


def test_an_ensemble_is_gated_on_its_own_confidence(tmp_path, data):
    run_a, model_a = make_run(tmp_path / "a", seed=1)
    run_b, model_b = make_run(tmp_path / "b", seed=2)
    both = predict([run_a, run_b], data, tta="flip", weights=[3, 1], tta_fraction=0.3)
    test_images = images(40, seed=5)
    members = [(model_a, 0.75), (model_b, 0.25)]
    every = predict_images(members, test_images, ["none", "flip"], 10)
    expected = gating.combine(every["none"], every["flip"], "flip", 0.3, eligible=~both.bad)
    good = ~both.bad
    np.testing.assert_allclose(both.probs[good], expected.probs[good], atol=1e-6)
    np.testing.assert_array_equal(both.views, expected.views)
    assert (both.views == 2).sum() == 12  # ceil(0.3 x 37 decodable images)

    # probabilities saved earlier join the ranking: the same ensemble, one member from a file
    a_alone = predict([run_a], data, tta="none")
    mixed = predict(
        [save_probs(a_alone, tmp_path / "a.npz"), run_b], data, tta="flip", weights=[3, 1], tta_fraction=0.3
    )
    b_one, b_every = (predict_images([(model_b, 0.25)], test_images, [m], 10)[m] for m in ("none", "flip"))
    chosen = gating.least_confident(0.75 * a_alone.probs + b_one, 0.3, eligible=good)
    np.testing.assert_array_equal(np.flatnonzero(mixed.views == 2), chosen)
    np.testing.assert_allclose(mixed.probs[chosen], (0.75 * a_alone.probs + b_every)[chosen], atol=1e-6)


def test_saved_probabilities_record_the_views(tmp_path, data):
    run, _ = make_run(tmp_path / "run")
    p = predict([run], data, tta="translate", tta_fraction=0.5)
    back = load_probs(save_probs(p, tmp_path / "p.npz"))
    np.testing.assert_array_equal(back.views, p.views)
    assert back.tta_fraction == 0.5 and sorted(set(back.views.tolist())) == [1, 6] and (back.views == 6).sum() == 19
    assert set(back.views[back.bad].tolist()) == {1}

    legacy = tmp_path / "legacy.npz"  # written before gating existed: every row had every view
    np.savez(legacy, ids=p.ids, probs=p.probs, confidence=p.confidence, bad=p.bad, classes=CLASSES, tta="flip")
    old = load_probs(legacy)
    assert old.views is None and old.views_per_row().tolist() == [2] * 40 and old.tta_fraction == 1

    alone = predict([tmp_path / "p.npz"], data, tta="translate")  # an ensemble of saved files keeps their views
    np.testing.assert_array_equal(alone.views, p.views)


def test_saved_probabilities_alone_say_what_they_had_whatever_the_command_asks(tmp_path, data, run_cli):
    """Nothing is computed from saved probabilities alone, so the result, its summary and a file saved from it
    have the members' TTA mode, views and share with every view, not the command's --tta."""
    run, _ = make_run(tmp_path / "run")
    flip = save_probs(predict([run], data, tta="flip", tta_fraction=0.3), tmp_path / "flip.npz")
    first = load_probs(flip)
    for asked in ("none", "flip", "shift"):
        alone = predict([flip], data, tta=asked)
        assert alone.tta == "flip" and alone.tta_fraction == pytest.approx(12 / 37), asked
        np.testing.assert_array_equal(alone.views, first.views)
    again = load_probs(save_probs(alone, tmp_path / "again.npz"))
    assert again.tta == "flip" and again.tta_fraction == pytest.approx(12 / 37)

    out = tmp_path / "s.csv"
    code, said, err = run_cli("predict", flip, "--data-dir", data, "--out", out, "--tta", "shift", "--force")
    line = said.strip().splitlines()[-1]
    assert code == 0 and "TTA flip (2 views on the 12 least confident of 37 images, 1 on the rest)" in line, err
    assert "saved probabilities ->" in line and "images/s" not in line
    assert json.loads(out.with_suffix(".sources.json").read_text())["tta"] == "flip"

    # members of different modes: the one with the most views, each row the most views any member gave it
    flip_all = save_probs(predict([run], data, tta="flip", tta_fraction=1), tmp_path / "flip_all.npz")
    shift = save_probs(predict([run], data, tta="shift", tta_fraction=0.5), tmp_path / "shift.npz")
    both = predict([flip_all, shift], data)
    every = np.flatnonzero(load_probs(shift).views == 10)
    assert both.tta == "shift" and both.tta_fraction == pytest.approx(19 / 37) and len(every) == 19
    np.testing.assert_array_equal(np.flatnonzero(both.views == 10), every)
    assert set(both.views[~both.bad & (both.views < 10)].tolist()) == {2}
    code, said, err = run_cli("predict", flip_all, shift, "--data-dir", data, "--out", out, "--force")
    assert code == 0 and "TTA shift (10 views on the 19 least confident of 37 images, fewer on the rest)" in said, err

    # the default file name has the files' mode too
    subs = tmp_path / "subs"
    for sources, name in (([flip], "flip-flip.csv"), ([flip_all, shift], "flip_all-ensemble-shift.csv")):
        code, said, err = run_cli("predict", *sources, "--data-dir", data, "--submissions-dir", subs, "--tta", "none")
        assert code == 0 and (subs / name).is_file(), (name, err)


def test_cli_refuses_a_bad_fraction_in_one_line(tmp_path, data, run_cli):
    run, _ = make_run(tmp_path / "run")
    for value in ("0", "1.5", "nan"):
        for command in (
            ("predict", run, "--data-dir", data, "--out", tmp_path / "s.csv"),
            ("evaluate", run, "--data-dir", data),
            ("run", "--data-dir", data, "--runs-dir", tmp_path / "runs", "--no-submit"),
        ):
            code, _, err = run_cli(*command, "--tta-fraction", value)
            assert code == 1 and err.strip() == (
                f"kagglecifar: error: --tta-fraction {float(value)}: expected a share of the images above 0 and at "
                "most 1 (1: every image gets every view of the TTA mode)"
            ), (command, err)
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "runs").exists()

    code, out, err = run_cli("predict", run, "--data-dir", data, "--out", tmp_path / "s.csv", "--tta-fraction", "1")
    assert code == 0 and "TTA flip (2 views), 3 undecodable" in out, err


def test_the_help_states_the_default_fraction(run_cli):
    code, out, _ = run_cli("predict", "--help")
    assert code == 0 and f"Default: {gating.DEFAULT_FRACTION:g}." in " ".join(out.split())
    code, out, _ = run_cli("evaluate", "--help")
    assert code == 0 and f"(default: predict's, {gating.DEFAULT_FRACTION:g})" in " ".join(out.split())


def test_evaluate_reports_each_mode_at_the_default_fraction_and_at_1(tmp_path, run_cli):
    train_ids = np.arange(1, 41)
    pixels = images(40, seed=7)
    run, model = make_run(tmp_path / "run", val_ids=list(range(1, 41, 2)))
    labels = np.random.default_rng(1).integers(0, 10, 40)
    write_split(tmp_path / "data", "train", pixels, train_ids, CLASSES, labels=labels)
    (run / rundir.MARKER).write_text(json.dumps({"created_by": "kagglecifar"}))  # a run: evaluate records into it

    report = evaluate(run / "best.pt", tmp_path / "data", ("flip", "shift"), tta_fraction=0.3, progress=False)
    assert list(report.overall) == ["none", "flip", "flip@0.3", "shift", "shift@0.3"]
    val = pixels[::2]
    every = predict_images([(model, 1.0)], val, ["none", "flip", "shift"], 10)
    for mode in ("flip", "shift"):
        gated = gating.combine(every["none"], every[mode], mode, 0.3).probs
        assert report.overall[f"{mode}@0.3"] == pytest.approx((gated.argmax(1) == labels[::2]).mean())
        assert report.overall[mode] == pytest.approx((every[mode].argmax(1) == labels[::2]).mean())
    assert report.largest_mode == "shift"

    code, out, err = run_cli("evaluate", run, "--data-dir", tmp_path / "data", "--tta", "flip", "--tta-fraction", "0.5")
    assert code == 0, err
    assert "flip@0.5" in out.splitlines()[0]
    assert out.strip().splitlines()[-1].startswith("evaluate: 20 validation images, accuracy none ")
    assert ", flip@0.5 " in out.strip().splitlines()[-1]
    record = json.loads((run / "evaluation.json").read_text())  # compare reads "accuracy": every view only
    assert set(record["accuracy"]) == {"none", "flip", "shift"}  # both evaluations, as without gating
    assert set(record["gated_accuracy"]) == {"flip@0.3", "shift@0.3", "flip@0.5"}


def test_saved_views_that_do_not_fit_the_ids_are_one_line(tmp_path, data):
    run, _ = make_run(tmp_path / "run")
    p = predict([run], data, tta="flip", tta_fraction=0.5)
    bad = tmp_path / "bad.npz"
    np.savez(
        bad,
        ids=p.ids,
        probs=p.probs,
        confidence=p.confidence,
        bad=p.bad,
        classes=CLASSES,
        tta="flip",
        views=np.ones(len(p.ids) - 1, np.uint8),
        tta_fraction=0.5,
    )
    with pytest.raises(KaggleCifarError, match=r"bad.npz: not probabilities saved .*views \(39,\) uint8"):
        load_probs(bad)
