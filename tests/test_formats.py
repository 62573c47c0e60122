"""Reading CIFAR data in the python format and as image folders, and recognising what a path holds."""

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
from cifar_sources import (
    CIFAR10_NAMES,
    add_member,
    coarse_names,
    fine_names,
    make_cifar_python,
    make_image_folder,
    png,
    py2_pickle,
)

from kagglecifar import cache
from kagglecifar.cache.formats import detect_format, locate, read_source
from kagglecifar.errors import KaggleCifarError


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# ---- CIFAR python format -------------------------------------------------------------------------


@pytest.mark.parametrize("archive", [True, False], ids=["tar.gz", "folder"])
def test_cifar10_round_trip(tmp_path, archive):
    path, truth = make_cifar_python(tmp_path, "cifar-10", n_train=13, n_test=4, archive=archive)
    splits = read_source(path)
    assert set(splits) == {"train", "test"}
    for name, split in splits.items():
        np.testing.assert_array_equal(split.images, truth[name]["images"])
        np.testing.assert_array_equal(split.labels, truth[name]["labels"])
        np.testing.assert_array_equal(split.ids, np.arange(1, len(truth[name]["labels"]) + 1))
        assert split.classes == CIFAR10_NAMES and split.coarse_classes is None and not split.bad.any()
        assert split.images.dtype == np.uint8 and split.images.flags.c_contiguous
    assert splits["train"].names[:2] == ["train_00000.png", "train_00001.png"]
    assert splits["test"].manifest_fields()["labelled"] is True


def test_cifar100_fine_labels_keep_the_super_classes(tmp_path):
    path, truth = make_cifar_python(tmp_path, "cifar-100", n_train=30, n_test=9)
    splits = read_source(path, labels="fine")
    train, test = splits["train"], splits["test"]
    np.testing.assert_array_equal(train.images, truth["train"]["images"])
    np.testing.assert_array_equal(test.labels, truth["test"]["labels"])
    assert train.classes == fine_names() and train.coarse_classes == coarse_names()
    seen = np.union1d(truth["train"]["labels"], truth["test"]["labels"])
    mapping = np.array(train.fine_to_coarse)
    np.testing.assert_array_equal(mapping[seen], seen % 20)
    assert (mapping[np.setdiff1d(np.arange(100), seen)] == -1).all()
    assert test.manifest_fields() == {
        "labelled": True,
        "conversions": {},
        "coarse_classes": coarse_names(),
        "fine_to_coarse": mapping.tolist(),
    }


def test_cifar100_coarse_labels(tmp_path):
    path, truth = make_cifar_python(tmp_path, "cifar-100", n_train=30, n_test=9, archive=False)
    splits = read_source(path, labels="coarse")
    np.testing.assert_array_equal(splits["train"].labels, truth["train"]["coarse"])
    np.testing.assert_array_equal(splits["test"].labels, truth["test"]["coarse"])
    assert splits["train"].classes == coarse_names() and splits["train"].coarse_classes is None


def test_coarse_labels_of_cifar10_are_an_error(tmp_path):
    path, _ = make_cifar_python(tmp_path, "cifar-10")
    with pytest.raises(KaggleCifarError, match="is CIFAR-10, which has no coarse labels") as exc:
        read_source(path, labels="coarse")
    one_line(exc)


def test_splits_go_into_the_cache_and_come_back(tmp_path):
    path, truth = make_cifar_python(tmp_path / "src", "cifar-100", n_train=12, n_test=5)
    for name, split in read_source(path).items():
        cache.write_split(
            tmp_path / "data",
            name,
            split.images,
            split.ids,
            split.classes,
            labels=split.labels,
            bad=split.bad,
            **split.manifest_fields(),
        )
    test = cache.load_split(tmp_path / "data", "test")
    np.testing.assert_array_equal(test.images, truth["test"]["images"])
    np.testing.assert_array_equal(test.labels, truth["test"]["labels"])
    assert test.classes == fine_names() and test.manifest["coarse_classes"] == coarse_names()
    assert test.manifest["labelled"] and len(test.manifest["fine_to_coarse"]) == 100


class Payload:
    """Unpickling this with the standard unpickler runs a shell command that creates a marker file."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class ExecPayload:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


@pytest.mark.parametrize("archive", [True, False], ids=["tar.gz", "folder"])
@pytest.mark.parametrize("payload", ["system", "exec"])
def test_a_malicious_pickle_is_refused_and_its_payload_never_runs(tmp_path, archive, payload):
    marker = tmp_path / "pwned"
    evil = Payload(f"touch {marker}") if payload == "system" else ExecPayload(f"open({str(marker)!r}, 'w').close()")
    data = pickle.dumps({b"data": evil, b"labels": [0]}, protocol=2)
    path, _ = make_cifar_python(tmp_path / "src", "cifar-10", archive=archive, extra={"data_batch_3": data})
    with pytest.raises(KaggleCifarError) as exc:
        read_source(path)
    message = one_line(exc)
    assert "data_batch_3" in message and "refusing to unpickle" in message
    assert ("posix.system," if payload == "system" else "__builtin__.exec,") in message
    assert not marker.exists()
    # the same bytes through the standard unpickler do run it: the test would notice a reader that used it
    pickle.loads(data)
    assert marker.exists()


def test_object_arrays_are_refused(tmp_path):
    """An object array would call whatever its elements' pickles name; the dtype is refused before those load."""
    data = py2_pickle({b"data": np.array([print, 1], dtype=object), b"labels": [0, 0]})
    assert b"print" in data
    path, _ = make_cifar_python(tmp_path, "cifar-10", extra={"data_batch_1": data})
    with pytest.raises(KaggleCifarError, match=r"data_batch_1: not a readable CIFAR pickle .*not a plain number type"):
        read_source(path)


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_archive_is_a_one_line_error(tmp_path, keep):
    path, _ = make_cifar_python(tmp_path, "cifar-10", n_train=50, n_test=20)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(KaggleCifarError, match="damaged or truncated archive") as exc:
        read_source(path)
    assert str(path) in one_line(exc)


def test_truncated_pickle_in_a_folder_is_a_one_line_error(tmp_path):
    folder, _ = make_cifar_python(tmp_path, "cifar-10", n_train=50, archive=False)
    data = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(data[: len(data) // 2])
    with pytest.raises(KaggleCifarError, match="test_batch: not a readable CIFAR pickle") as exc:
        read_source(folder)
    one_line(exc)


@pytest.mark.parametrize(
    "member, link", [("../outside", None), ("/etc/cifar", None), ("cifar-10-batches-py/readme", "../../etc/passwd")]
)
def test_archive_members_leaving_the_folder_are_refused(tmp_path, member, link):
    path, _ = make_cifar_python(tmp_path, "cifar-10")
    with tarfile.open(path, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar]
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
        add_member(tar, member, b"x", link=link)
    with pytest.raises(KaggleCifarError, match="points outside the archive's folder; refusing") as exc:
        read_source(path)
    assert repr(member) in one_line(exc)


def test_wrong_labels_are_named(tmp_path):
    data = py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})
    path, _ = make_cifar_python(tmp_path, "cifar-10", extra={"data_batch_2": data})
    with pytest.raises(KaggleCifarError, match=r"data_batch_2: 'labels': labels outside 0..9"):
        read_source(path)


# ---- image folders -------------------------------------------------------------------------------


def test_image_folder_with_labelled_test(tmp_path):
    written = make_image_folder(tmp_path, {"dog": 3, "cat": 2}, test={"cat": 1, "dog": 2})
    splits = read_source(tmp_path)
    train = splits["train"]
    assert train.classes == ["cat", "dog"]
    assert train.names == sorted(n for n in written if n.startswith("train/"))
    np.testing.assert_array_equal(train.ids, np.arange(1, 6))
    np.testing.assert_array_equal(train.labels, [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(train.images, np.stack([written[n] for n in train.names]))
    test = splits["test"]
    np.testing.assert_array_equal(test.labels, [0, 1, 1])
    assert test.classes == ["cat", "dog"] and not test.bad.any()


def test_flat_test_folder_is_unlabelled_and_keeps_integer_names_as_ids(tmp_path):
    make_image_folder(tmp_path, {"cat": 2, "dog": 2}, test=11)
    test = read_source(tmp_path)["test"]
    assert test.labels is None and test.manifest_fields()["labelled"] is False
    assert sorted(test.ids.tolist()) == list(range(1, 12))
    assert all(name == f"test/{i}.png" for name, i in zip(test.names, test.ids))


def test_broken_images_are_flagged_not_fatal_and_odd_ones_converted(tmp_path):
    import cv2

    written = make_image_folder(tmp_path, {"cat": 3, "dog": 1})
    (tmp_path / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "train" / "dog" / "empty.jpg").write_bytes(b"")
    big_gray = np.random.default_rng(1).integers(0, 256, (64, 48), dtype=np.uint8)
    (tmp_path / "train" / "dog" / "big.jpeg").write_bytes(cv2.imencode(".jpg", big_gray)[1].tobytes())
    train = read_source(tmp_path)["train"]
    bad = {name for name, b in zip(train.names, train.bad) if b}
    assert bad == {"train/cat/broken.png", "train/dog/empty.jpg"}
    assert not train.images[train.bad].any()
    for name, image in written.items():
        np.testing.assert_array_equal(train.images[train.names.index(name)], image)
    assert train.conversions == {"gray": 1, "resized": 1}


def test_links_leading_outside_are_refused_links_inside_are_read(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root, {"cat": 2, "dog": 2})
    (root / "train" / "cat" / "again.png").symlink_to(root / "train" / "dog" / "dog_0000.png")
    assert len(read_source(root)["train"]) == 5
    outside = tmp_path / "secret.png"
    outside.write_bytes(png(np.zeros((32, 32, 3), np.uint8)))
    (root / "train" / "dog" / "leak.png").symlink_to(outside)
    with pytest.raises(KaggleCifarError, match="leak.png: a link to .*secret.png, outside") as exc:
        read_source(root)
    one_line(exc)
    (root / "train" / "dog" / "leak.png").unlink()
    (tmp_path / "elsewhere").mkdir()
    (root / "train" / "bird").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(KaggleCifarError, match="bird: a link to .*elsewhere, outside"):
        read_source(root, "image-folder")


def test_image_folder_mistakes_are_named(tmp_path):
    make_image_folder(tmp_path, {"cat": 2}, test={"cat": 1, "wolf": 1})
    with pytest.raises(KaggleCifarError, match="class 'wolf' is not among the training classes"):
        read_source(tmp_path)
    (tmp_path / "test" / "wolf" / "wolf_0000.png").unlink()
    (tmp_path / "test" / "wolf").rmdir()
    (tmp_path / "train" / "loose.png").write_bytes(png(np.zeros((32, 32, 3), np.uint8)))
    with pytest.raises(KaggleCifarError, match="1 images outside class folders"):
        read_source(tmp_path, "image-folder")
    with pytest.raises(KaggleCifarError, match="--labels coarse: only CIFAR-100 python data has coarse labels"):
        read_source(tmp_path, "image-folder", labels="coarse")


# ---- recognising the format ----------------------------------------------------------------------


def test_detect_format_from_what_is_there(tmp_path):
    competition = tmp_path / "competition"
    competition.mkdir()
    (competition / "train.7z").write_bytes(b"")
    (competition / "trainLabels.csv").write_text("id,label\n")
    assert detect_format(competition) == "competition"

    archive, _ = make_cifar_python(tmp_path / "c10", "cifar-10")
    assert detect_format(archive) == "cifar-python" and locate(tmp_path / "c10").path == archive
    # a downloaded Kaggle dataset: the data two levels down, as the archive and extracted
    dataset = tmp_path / "dataset"
    make_cifar_python(dataset / "cifar100", "cifar-100", archive=True)
    folder, _ = make_cifar_python(dataset / "cifar100", "cifar-100", archive=False)
    found = locate(dataset)
    assert (found.format, found.path, found.kind) == ("cifar-python", folder, "cifar-100")

    make_image_folder(tmp_path / "images" / "cifar10", {"cat": 1, "dog": 1})
    assert locate(tmp_path / "images").path == tmp_path / "images" / "cifar10"
    assert detect_format(tmp_path / "images") == "image-folder"


def test_several_or_no_sources_are_clear_errors(tmp_path):
    make_cifar_python(tmp_path / "both", "cifar-10")
    make_cifar_python(tmp_path / "both", "cifar-100")
    with pytest.raises(KaggleCifarError, match=r"2 sources in it: .*cifar-10-python.tar.gz \(cifar-python cifar-10\)"):
        detect_format(tmp_path / "both")

    make_image_folder(tmp_path / "mixed", {"cat": 1})
    archive, _ = make_cifar_python(tmp_path / "mixed", "cifar-10")
    with pytest.raises(KaggleCifarError, match="point at one of them or pass --format"):
        detect_format(tmp_path / "mixed")
    assert locate(tmp_path / "mixed", "cifar-python").path == archive
    assert locate(tmp_path / "mixed", "image-folder").path == tmp_path / "mixed"

    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(KaggleCifarError) as exc:
        detect_format(tmp_path / "empty")
    message = one_line(exc)
    assert "no CIFAR data found" in message and "train.7z + trainLabels.csv" in message
    assert "batches.meta" in message and "train/CLASS/*.png|jpg" in message
    with pytest.raises(KaggleCifarError, match="--format zip: choose from competition, cifar-python, image-folder"):
        locate(tmp_path, "zip")


# ---- the restricted unpickler itself -------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_python3_repickled_cifar_data_loads_too(protocol):
    from kagglecifar.cache.formats.safe_pickle import load_pickle

    rows = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    doc = load_pickle(pickle.dumps({b"data": rows, b"labels": [1, 2, 3], "names": {"a", "b"}}, protocol), "x")
    np.testing.assert_array_equal(doc[b"data"], rows)
    assert doc[b"labels"] == [1, 2, 3] and doc["names"] == {"a", "b"}


class CallsNdarray:
    def __reduce__(self):
        return np.ndarray, ((2,),)


@pytest.mark.parametrize(
    "data, reason",
    [
        (pickle.dumps(CallsNdarray(), 2), "numpy.ndarray called directly"),
        (b"\x80\x02cnumpy\ndtype\n}U\x03fooK\x01sb.", "AttributeError"),  # BUILD with a dict on an allowed global
        (b"\x80\x02cnumpy\ndtype\nN}X\x07\x00\x00\x00__doc__K\x01s\x86b.", "setting attributes of an allowed global"),
        (b"\x80\x02cnumpy\ndtype\nU\x01OK\x00K\x01\x87R.", "dtype object is not a plain number type"),
    ],
    ids=["ndarray-call", "build-dict", "build-slots", "object-dtype"],
)
def test_allowed_globals_cannot_be_misused(data, reason):
    from kagglecifar.cache.formats import safe_pickle

    before = {key: (type(value), getattr(value, "_call", None)) for key, value in safe_pickle.ALLOWED.items()}
    with pytest.raises(KaggleCifarError, match=f"x: not a readable CIFAR pickle .*{reason}"):
        safe_pickle.load_pickle(data, "x")
    assert {key: (type(v), getattr(v, "_call", None)) for key, v in safe_pickle.ALLOWED.items()} == before


def test_source_stamp_changes_when_the_source_does(tmp_path):
    from kagglecifar.cache.formats import source_stamp

    folder, _ = make_cifar_python(tmp_path, "cifar-10", archive=False)
    found = locate(tmp_path)
    stamp = source_stamp(found)
    assert stamp["format"] == "cifar-python" and stamp["files"] == 7 and stamp == source_stamp(locate(tmp_path))
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes() + b"\0")
    assert source_stamp(found)["bytes"] == stamp["bytes"] + 1
