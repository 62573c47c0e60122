"""fetch -> train -> evaluate -> predict through the CLI on the other source formats: CIFAR-100 python data with
fine and coarse labels, CIFAR-10 python data, an image folder with a broken image, a Kaggle dataset (loopback
fake); and the ways they fail: a truncated archive, a malicious pickle, an ambiguous folder, submitting."""

import csv
import pickle
import subprocess

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from cifar_sources import coarse_names, fine_names, make_cifar_python, make_image_folder, png
from fake_kaggle import serving

from kagglecifar import cache
from kagglecifar.checkpoint import load_model

N_TRAIN, N_TEST = 200, 40  # CIFAR-100: two training images per class (labels cycle through all 100)
TINY = (
    "--preset",
    "cpu",
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--augment",
    "none",
    "--device",
    "cpu",
    "--workers",
    "0",
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a busy two-core machine are much slower than one
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cifar100(tmp_path_factory):
    return make_cifar_python(tmp_path_factory.mktemp("cifar100"), "cifar-100", N_TRAIN, N_TEST, archive=True)


def one_line_error(code, err, *parts):
    assert code == 1 and err.count("\n") == 1 and err.startswith("kagglecifar: error: "), err
    for part in parts:
        assert part in err, err


def model_predictions(run, images):
    """What the run's best.pt predicts for RGB images (no TTA), computed here without kagglecifar's predict."""
    model, payload = load_model(run / "best.pt", torch.device("cpu"))
    with torch.no_grad():
        logits = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    return logits.argmax(1).numpy(), payload["classes"]


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.mark.slow
def test_cifar100_fine_labels_end_to_end(run_cli, cifar100, tmp_path):
    archive, truth = cifar100
    data, runs = tmp_path / "data", tmp_path / "runs"
    code, out, err = run_cli("fetch", "--from-dir", archive, "--data-dir", data)
    assert code == 0, err
    assert f"(cifar-python cifar-100); train {N_TRAIN}, test {N_TEST} images" in out and "0 undecodable" in out
    test = cache.load_split(data, "test")
    assert test.classes == fine_names() and test.manifest["labelled"] and test.manifest["format"] == "cifar-python"
    np.testing.assert_array_equal(test.labels, truth["test"]["labels"])

    code, out, err = run_cli(
        "train", "mlp", *TINY, "--val-fraction", "0.5", "--data-dir", data, "--runs-dir", runs, "--name", "fine"
    )
    assert code == 0, err
    run = runs / "fine"
    assert load_model(run / "best.pt", torch.device("cpu"))[0](torch.rand(2, 3, 32, 32)).shape == (2, 100)

    code, out, err = run_cli("evaluate", run, "--data-dir", data, "--tta", "flip")
    assert code == 0, err
    # Test accuracy per class and per super-class, computed here from the model's own predictions.
    predicted, classes = model_predictions(run, truth["test"]["images"])
    assert classes == fine_names()
    labels = truth["test"]["labels"]
    accuracy, super_accuracy = (predicted == labels).mean(), (predicted % 20 == labels % 20).mean()
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("evaluate: 100 validation images, accuracy none ")
    assert f"; {N_TEST} test images, accuracy none {accuracy:.2%}, flip " in summary
    assert "super-class test accuracy " in summary and f"per class {run / 'per_class.csv'}" in summary
    assert "The 10 worst of 100 classes (test accuracy, TTA flip):" in out and "The 5 best:" in out
    assert "Super-classes" in out and "Most frequent confusions (test, TTA flip):" in out
    assert len(out.splitlines()) < 70  # 100 classes, yet readable on a screen
    table = pd.read_csv(run / "per_class.csv")
    assert table["class"].tolist() == fine_names() and table["super_class"].tolist()[:21:20] == ["coarse00"] * 2
    assert table["test_images"].sum() == N_TEST and table["validation_images"].sum() == 100
    shown = table.dropna(subset=["test_none"])
    for name, value in zip(shown["class"], shown["test_none"]):
        i = fine_names().index(name)
        assert value == pytest.approx((predicted[labels == i] == i).mean(), abs=1e-4)
    supers = pd.read_csv(run / "per_superclass.csv")
    assert supers["super_class"].tolist() == coarse_names()
    got = (supers["test_none"] * supers["test_images"]).sum() / N_TEST
    assert got == pytest.approx(super_accuracy, abs=1e-3)
    assert (run / "confusion_matrix_test.png").stat().st_size > 1000

    out_csv = tmp_path / "fine.csv"
    code, out, err = run_cli("predict", run, "--data-dir", data, "--tta", "none", "--device", "cpu", "--out", out_csv)
    assert code == 0, err
    rows = read_rows(out_csv)
    assert rows[0] == ["id", "label"]
    assert rows[1:] == [[str(i + 1), fine_names()[p]] for i, p in enumerate(predicted)]


@pytest.mark.slow
def test_cifar100_coarse_labels_rebuild_the_cache_and_up_to_date_sources_are_skipped(run_cli, cifar100, tmp_path):
    archive, truth = cifar100
    data, runs = tmp_path / "data", tmp_path / "runs"
    assert run_cli("fetch", "--from-dir", archive, "--data-dir", data)[0] == 0
    code, out, err = run_cli("fetch", "--from-dir", archive, "--data-dir", data)
    assert code == 0 and "train 200 (up to date), test 40 (up to date) images" in out, err
    train_manifest = cache.split_dir(data, "train") / "manifest.json"
    written = train_manifest.stat().st_mtime_ns

    code, out, err = run_cli("fetch", "--from-dir", archive, "--data-dir", data, "--labels", "coarse")
    assert code == 0 and "coarse labels); train 200, test 40 images" in out, err
    test = cache.load_split(data, "test")
    assert test.classes == coarse_names() and "fine_to_coarse" not in test.manifest
    np.testing.assert_array_equal(test.labels, truth["test"]["coarse"])
    written_coarse = train_manifest.stat().st_mtime_ns
    assert written_coarse != written
    code, out, err = run_cli("fetch", "--from-dir", archive, "--data-dir", data, "--labels", "coarse")
    assert "(up to date)" in out and train_manifest.stat().st_mtime_ns == written_coarse
    code, out, err = run_cli("fetch", "--from-dir", archive, "--data-dir", data, "--labels", "coarse", "--force")
    assert "(up to date)" not in out and train_manifest.stat().st_mtime_ns != written_coarse

    code, out, err = run_cli("train", "mlp", *TINY, "--data-dir", data, "--runs-dir", runs, "--name", "coarse")
    assert code == 0, err
    code, out, err = run_cli("evaluate", runs / "coarse", "--data-dir", data, "--tta", "none")
    assert code == 0, err
    predicted, classes = model_predictions(runs / "coarse", truth["test"]["images"])
    assert classes == coarse_names()
    accuracy = (predicted == truth["test"]["coarse"]).mean()
    assert f"{N_TEST} test images, accuracy none {accuracy:.2%}" in out
    assert "Super-classes" not in out and "coarse19" in out  # 20 classes: every one in the table
    code, out, err = run_cli(
        "predict",
        runs / "coarse",
        "--data-dir",
        data,
        "--tta",
        "none",
        "--device",
        "cpu",
        "--out",
        tmp_path / "coarse.csv",
    )
    assert code == 0, err
    assert read_rows(tmp_path / "coarse.csv")[1:] == [[str(i + 1), coarse_names()[p]] for i, p in enumerate(predicted)]


@pytest.mark.slow
def test_image_folder_with_a_broken_image_end_to_end(run_cli, tmp_path):
    root = tmp_path / "pets"
    make_image_folder(root, {"cat": 8, "dog": 8, "frog": 8})
    (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    rng = np.random.default_rng(1)
    (root / "test").mkdir()
    names = ["b.png", "a.jpg", "c,d.png"]
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    for name, image in zip(names, images):
        (root / "test" / name).write_bytes(png(image))
    (root / "test" / "zz.png").write_bytes(b"not an image")
    data, runs = tmp_path / "data", tmp_path / "runs"

    code, out, err = run_cli("fetch", "--from-dir", tmp_path, "--data-dir", data)
    assert code == 0, err
    assert "(image-folder); train 25, test 4 images" in out and "2 undecodable" in out
    assert "\r" not in out + err  # off a terminal: no progress-bar frames in a log file
    assert cache.load_split(data, "train").bad.sum() == 1

    code, out, err = run_cli(
        "train", "mlp", *TINY, "--val-fraction", "0.25", "--data-dir", data, "--runs-dir", runs, "--name", "pets"
    )
    assert code == 0, err
    code, out, err = run_cli("evaluate", runs / "pets", "--data-dir", data, "--tta", "none")
    assert code == 0 and "test images" not in out and "validation images" in out, err  # the test is unlabelled

    code, out, err = run_cli(
        "predict", runs / "pets", "--data-dir", data, "--tta", "none", "--device", "cpu", "--out", tmp_path / "pets.csv"
    )
    assert code == 0 and "1 undecodable ids" in out, err
    rows = read_rows(tmp_path / "pets.csv")
    predicted, classes = model_predictions(runs / "pets", images[[1, 0, 2]])  # ids follow the sorted file names
    assert rows[0] == ["id", "label", "file"]
    assert rows[1:4] == [
        [str(i + 1), classes[p], f"test/{n}"] for i, (p, n) in enumerate(zip(predicted, ["a.jpg", "b.png", "c,d.png"]))
    ]
    assert rows[4][0::2] == ["4", "test/zz.png"] and rows[4][1] in classes
    assert (tmp_path / "pets.bad-ids.txt").read_text().splitlines()[1:] == ["4"]

    # The same folder again, now without test/: the old test split goes, it would not be this source's.
    for path in (root / "test").iterdir():
        path.unlink()
    (root / "test").rmdir()
    code, out, err = run_cli("fetch", "--from-dir", root, "--data-dir", data)
    assert code == 0 and "(no test split)" in out and not cache.is_complete(data, "test"), err
    assert "(up to date)" in run_cli("fetch", "--from-dir", root, "--data-dir", data)[1]
    code, out, err = run_cli("predict", runs / "pets", "--data-dir", data, "--out", tmp_path / "none.csv")
    one_line_error(code, err, "no test split (the image-folder source has no test images); nothing to predict")
    code, out, err = run_cli(
        "run",
        "mlp",
        "--preset",
        "cpu",
        "--from-dir",
        root,
        "--no-submit",
        "--data-dir",
        data,
        "--runs-dir",
        runs,
        "--submissions-dir",
        tmp_path / "submissions",
    )
    assert code == 0 and "nothing to predict: the image-folder source has no test images" in out, err
    assert "1 of 4 stages ran (train)" in out


def test_a_truncated_archive_is_one_line_and_builds_nothing(run_cli, tmp_path):
    archive, _ = make_cifar_python(tmp_path / "src", "cifar-100", n_train=50, n_test=20)
    archive.write_bytes(archive.read_bytes()[:-3000])
    code, out, err = run_cli("fetch", "--from-dir", archive, "--data-dir", tmp_path / "data")
    one_line_error(code, err, str(archive), "damaged or truncated archive")
    assert not (tmp_path / "data" / "cache").exists()


class Payload:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os

        return os.system, (self.command,)


@pytest.mark.parametrize("archive", [True, False], ids=["tar.gz", "folder"])
def test_a_malicious_pickle_is_refused_in_one_line_and_its_payload_never_runs(run_cli, tmp_path, archive):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": Payload(f"touch {marker}"), b"fine_labels": [0]}, protocol=2)
    source, _ = make_cifar_python(tmp_path / "src", "cifar-100", archive=archive, extra={"train": evil})
    code, out, err = run_cli("fetch", "--from-dir", source, "--data-dir", tmp_path / "data")
    one_line_error(code, err, "train: refusing to unpickle it: it asks for posix.system")
    assert not marker.exists() and not (tmp_path / "data" / "cache").exists()


def test_format_is_recognised_or_forced_and_options_that_do_not_apply_are_refused(run_cli, tmp_path):
    mixed = tmp_path / "mixed"
    make_cifar_python(mixed, "cifar-10", n_train=20, n_test=5)
    make_image_folder(mixed / "pictures", {"cat": 2, "dog": 2})
    data = tmp_path / "data"
    code, out, err = run_cli("fetch", "--from-dir", mixed, "--data-dir", data)
    one_line_error(code, err, "2 sources in it", "or pass --format")
    code, out, err = run_cli("fetch", "--from-dir", mixed, "--data-dir", data, "--format", "image-folder")
    assert code == 0 and "(image-folder); train 4 images (no test split)" in out, err
    code, out, err = run_cli("fetch", "--from-dir", mixed, "--data-dir", data, "--format", "cifar-python")
    assert code == 0 and "(cifar-python cifar-10); train 20, test 5 images" in out, err
    assert cache.load_split(data, "train").classes[0] == "airplane"
    for args, message in [
        (("--format", "competition"), "no competition data found"),
        (("--format", "cifar-python", "--labels", "coarse"), "is CIFAR-10, which has no coarse labels"),
        (("--format", "cifar-python", "--labels", "medium"), "--labels medium: choose fine or coarse"),
        (("--format", "cifar-python", "--keep-png"), "--keep-png: only for the competition's archives"),
        (("--format", "zip"), "--format zip: choose from competition, cifar-python, image-folder"),
    ]:
        one_line_error(*run_cli("fetch", "--from-dir", mixed, "--data-dir", data, *args)[::2], message)
    one_line_error(
        *run_cli("fetch", "--format", "cifar-python", "--data-dir", data)[::2],
        "give --from-dir PATH or --dataset OWNER/NAME",
    )
    one_line_error(
        *run_cli("fetch", "--from-dir", mixed, "--dataset", "a/b", "--data-dir", data)[::2],
        "--from-dir and --dataset: give one of them",
    )


def test_a_kaggle_dataset_is_downloaded_into_the_data_folder_then_skipped(run_cli, cifar100, tmp_path, monkeypatch):
    archive, truth = cifar100
    with serving(monkeypatch, tmp_path / "home", None, datasets={"alice/cifar100": archive.parent}) as fake:
        data = tmp_path / "data"
        code, out, err = run_cli("fetch", "--dataset", "alice/cifar100", "--data-dir", data)
        assert code == 0, err
        assert out.startswith("fetch: dataset alice/cifar100: 1 files downloaded") and "cifar-100" in out
        assert (data / "datasets" / "alice" / "cifar100" / archive.name).read_bytes() == archive.read_bytes()
        np.testing.assert_array_equal(cache.load_split(data, "test").labels, truth["test"]["labels"])
        blobs = len(fake.called("blob"))
        code, out, err = run_cli("fetch", "--dataset", "alice/cifar100", "--data-dir", data)
        assert code == 0 and "all 1 files already downloaded" in out and "(up to date)" in out, err
        assert len(fake.called("blob")) == blobs and fake.key not in out + err


def test_run_takes_other_data_with_no_submit_and_refuses_to_submit_it(run_cli, tmp_path, monkeypatch):
    archive, _ = make_cifar_python(tmp_path / "src", "cifar-10", n_train=60, n_test=10)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("run", "mlp", "--preset", "cpu", "--from-dir", archive, "--tta", "none", "-y")
    one_line_error(code, err, "holds cifar-python data, not the cifar-10 competition's files", "add --no-submit")
    assert not (tmp_path / "runs").exists()  # refused before training

    code, out, err = run_cli("run", "mlp", "--preset", "cpu", "--from-dir", archive, "--tta", "none", "--no-submit")
    assert code == 0 and "2 of 4 stages ran (train, predict)" in out, err
    assert "not submitted (--no-submit)" in out
    rows = read_rows(tmp_path / "submissions" / "mlp-cpu-none.csv")
    assert rows[0] == ["id", "label"] and [r[0] for r in rows[1:]] == [str(i) for i in range(1, 11)]

    code, out, err = run_cli("submit", tmp_path / "submissions" / "mlp-cpu-none.csv", "-m", "x")
    one_line_error(code, err, "holds cifar-python data", "`submit` uploads to a Kaggle competition only")


# ---- stage details -------------------------------------------------------------------------------


def test_training_needs_labels_and_two_classes_and_keeps_every_class_trainable(run_cli, tmp_path, capsys):
    from kagglecifar.data.loading import split_rows

    images = np.zeros((6, 32, 32, 3), np.uint8)
    cache.write_split(tmp_path / "unlabelled", "train", images, range(1, 7), ["cat", "dog"], labelled=False)
    code, out, err = run_cli("train", "mlp", *TINY, "--data-dir", tmp_path / "unlabelled")
    one_line_error(code, err, "the train images have no labels, so no model can learn from them")
    cache.write_split(tmp_path / "one", "train", images, range(1, 7), ["cat"], labels=[0] * 6)
    one_line_error(*run_cli("train", "mlp", *TINY, "--data-dir", tmp_path / "one")[::2], "a classifier needs two")

    # A class of one image keeps it for training, whatever the validation share.
    labels = np.array([0, 0, 0, 0, 1, 2, 2])
    train_rows, val_rows = split_rows(labels, 0.6, seed=0)
    assert sorted(set(labels[train_rows])) == [0, 1, 2] and list(labels[val_rows]).count(1) == 0
    assert list(labels[val_rows]).count(0) == 2 and list(labels[val_rows]).count(2) == 1
    # A small share of a small dataset still validates: one image a class at least; 0 trains on everything.
    lopsided = np.repeat([0, 1], [30, 500])
    train_rows, val_rows = split_rows(lopsided, 0.02, seed=0)
    assert list(lopsided[val_rows]).count(0) == 1 and list(lopsided[val_rows]).count(1) == 10
    assert len(train_rows) + len(val_rows) == 530 and not set(train_rows) & set(val_rows)
    assert len(split_rows(lopsided, 0.0, seed=0)[1]) == 0
    cache.write_split(
        tmp_path / "small",
        "train",
        np.zeros((7, 32, 32, 3), np.uint8),
        range(1, 8),
        ["big", "tiny", "pair"],
        labels=labels,
    )
    code, out, err = run_cli(
        "train",
        "mlp",
        *TINY,
        "--batch-size",
        "2",
        "--val-fraction",
        "0.6",
        "--data-dir",
        tmp_path / "small",
        "--runs-dir",
        tmp_path / "runs",
    )
    assert code == 0, err
    assert "1 of 3 classes have too few images for a validation share of 0.6 (e.g. tiny)" in err


@pytest.mark.slow
def test_classes_without_a_super_class_and_without_images_are_shown_as_such(run_cli, tmp_path):
    source, truth = make_cifar_python(tmp_path / "src", "cifar-100", n_train=60, n_test=30)
    n_unseen = 100 - len(np.union1d(truth["train"]["labels"], truth["test"]["labels"]))
    data = tmp_path / "data"
    assert run_cli("fetch", "--from-dir", source, "--data-dir", data)[0] == 0
    assert cache.read_manifest(data, "train")["fine_to_coarse"].count(-1) == n_unseen > 0
    code, out, err = run_cli(
        "train",
        "mlp",
        *TINY,
        "--val-fraction",
        "0.5",
        "--data-dir",
        data,
        "--runs-dir",
        tmp_path / "runs",
        "--name",
        "r",
    )
    assert code == 0, err
    code, out, err = run_cli("evaluate", tmp_path / "runs" / "r", "--data-dir", data, "--tta", "none")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "runs" / "r" / "per_class.csv")
    unseen = table[table["super_class"] == "(none)"]
    assert len(unseen) == n_unseen and (unseen["test_images"] == 0).all() and unseen["test_none"].isna().all()
    # One image per class leaves none for validation: the test split alone is scored.
    assert out.strip().splitlines()[-1].startswith("evaluate: 30 test images, accuracy none ")
    (none_row,) = [line for line in out.splitlines() if line.startswith("(none)")]
    assert none_row.split()[1:] == ["-"]


def test_predictions_of_other_data_are_checked_before_they_are_written(tmp_path):
    from kagglecifar.errors import KaggleCifarError
    from kagglecifar.kaggle_io.submission_csv import write_predictions_csv

    path = write_predictions_csv(tmp_path / "p.csv", [3, 1, 2], ["b", "a", "b"], ["a", "b"], ["x.png", "y,1.png", "z"])
    assert read_rows(path) == [["id", "label", "file"], ["1", "a", "y,1.png"], ["2", "b", "z"], ["3", "b", "x.png"]]
    with pytest.raises(
        KaggleCifarError,
        match=r"p2.csv: refusing to write invalid predictions: line 2: unknown "
        r"label 'c'; expected one of a, b",
    ):
        write_predictions_csv(tmp_path / "p2.csv", [1, 2], ["c", "a"], ["a", "b"])
    with pytest.raises(KaggleCifarError, match="id 1 again"):
        write_predictions_csv(tmp_path / "p2.csv", [1, 1], ["a", "a"], ["a", "b"])
    assert not (tmp_path / "p2.csv").exists() and not list(tmp_path.glob(".p2*"))


def test_resnet50_imagenet_gets_one_output_per_class_and_trains_without_its_weights():
    from kagglecifar.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet50-imagenet", num_classes=100, weights=None, image_size=32, freeze_stages=3)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 17, 42, 99])
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model.train()(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert model.head[-1].out_features == 100 and losses[-1] < losses[0]


def test_a_run_trained_on_other_classes_is_refused_by_predict(run_cli, tmp_path):
    cifar10, _ = make_cifar_python(tmp_path / "c10", "cifar-10", n_train=40, n_test=5)
    cifar100, _ = make_cifar_python(tmp_path / "c100", "cifar-100", n_train=40, n_test=5)
    data = tmp_path / "data"
    assert run_cli("fetch", "--from-dir", cifar10, "--data-dir", data)[0] == 0
    code, out, err = run_cli("train", "mlp", *TINY, "--data-dir", data, "--runs-dir", tmp_path / "runs", "--name", "r")
    assert code == 0, err
    assert run_cli("fetch", "--from-dir", cifar100, "--data-dir", data)[0] == 0
    code, out, err = run_cli("predict", tmp_path / "runs" / "r", "--data-dir", data, "--out", tmp_path / "p.csv")
    one_line_error(
        code,
        err,
        "trained on 10 classes (airplane, automobile, bird, cat, deer, ...), the test cache",
        "has 100 (fine00, fine01, fine02, fine03, fine04, ...)",
    )
    assert not (tmp_path / "p.csv").exists()


def test_a_killed_build_s_partial_folder_is_cleaned_by_the_next_fetch(tmp_path, run_cli):
    source = tmp_path / "folder"
    for label in ("cat", "dog"):
        (source / "train" / label).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(source / "train" / label / f"{i}.png"), np.full((32, 32, 3), 40 * i, np.uint8))
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs: the build that left this folder behind died
    stale = tmp_path / "data" / "cache" / f".train.partial-{dead.pid}"
    stale.mkdir(parents=True)
    code, _, err = run_cli("fetch", "--from-dir", source, "--data-dir", tmp_path / "data")
    assert code == 0, err
    assert not stale.exists() and (tmp_path / "data" / "cache" / "train" / "manifest.json").is_file()
