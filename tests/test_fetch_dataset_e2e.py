"""Kaggle datasets: the real kaggle client downloads tiny CIFAR datasets from the loopback fake, and the
formats readers take what arrives."""

import zipfile

import numpy as np
import pytest
from cifar_sources import make_cifar_python, make_image_folder
from fake_kaggle import serving

from kagglecifar import kaggle_io
from kagglecifar.cache.formats import locate, read_source
from kagglecifar.errors import KaggleCifarError

PYTHON = "alice/cifar100-python"
IMAGES = "bob/cifar10-images"


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two datasets as published: CIFAR-100 python (archive + extracted: 4 files), a CIFAR-10 image folder."""
    python = tmp_path_factory.mktemp("python")
    make_cifar_python(python, "cifar-100", n_train=40, n_test=10, archive=True)
    _, truth = make_cifar_python(python, "cifar-100", n_train=40, n_test=10, archive=False)
    images = tmp_path_factory.mktemp("images")
    written = make_image_folder(images / "cifar10", {"cat": 4, "dog": 3, "frog": 3}, test=5)
    return {PYTHON: python, IMAGES: images, "truth": truth, "written": written}


@pytest.fixture
def fake(sources, tmp_path, monkeypatch):
    monkeypatch.setattr(kaggle_io.downloads, "MAX_SEPARATE_FILES", 8)  # the image folder (15 files) comes as one zip
    with serving(
        monkeypatch, tmp_path / "home", None, datasets={PYTHON: sources[PYTHON], IMAGES: sources[IMAGES]}
    ) as fake:
        yield fake


def same_files(got, expected) -> None:
    names = sorted(p.relative_to(expected).as_posix() for p in expected.rglob("*") if p.is_file())
    assert sorted(p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file()) == names
    for name in names:
        assert (got / name).read_bytes() == (expected / name).read_bytes(), name


def test_a_few_files_come_one_by_one_then_are_skipped(fake, sources, tmp_path, capsys):
    dest = tmp_path / "dest"
    summary = kaggle_io.download_dataset(PYTHON, dest)
    assert sorted(summary.downloaded) == [
        "cifar-100-python.tar.gz",
        "cifar-100-python/meta",
        "cifar-100-python/test",
        "cifar-100-python/train",
    ]
    same_files(dest, sources[PYTHON])
    assert [r.body for r in fake.called("DownloadDataset")][0].count(b'"fileName"') == 1
    splits = read_source(dest)
    np.testing.assert_array_equal(splits["test"].labels, sources["truth"]["test"]["labels"])

    blobs = len(fake.called("blob"))
    summary = kaggle_io.download_dataset(PYTHON, dest)
    assert summary.line() == "all 4 files already downloaded" and len(fake.called("blob")) == blobs
    out, err = capsys.readouterr()
    assert fake.key not in out + err


def test_many_files_come_as_the_dataset_zip_unpacked_in_place(fake, sources, tmp_path):
    dest = tmp_path / "dest"
    summary = kaggle_io.download_dataset(f"https://www.kaggle.com/datasets/{IMAGES}", dest)
    assert len(summary.downloaded) == 15 and summary.bytes > 0
    assert [r.path for r in fake.called("blob")] == [f"/blobs/datasets/{IMAGES}/archive.zip"]
    assert (dest / kaggle_io.DATASET_RECORD).is_file() and not list(dest.glob(".*.zip*"))
    (dest / kaggle_io.DATASET_RECORD).unlink()  # only to compare the folders
    same_files(dest, sources[IMAGES])
    assert locate(dest).path == dest / "cifar10"
    train = read_source(dest)["train"]
    np.testing.assert_array_equal(train.images[0], sources["written"][train.names[0]])

    kaggle_io.download_dataset(IMAGES, tmp_path / "again")
    summary = kaggle_io.download_dataset(IMAGES, tmp_path / "again")
    assert summary.line() == "all 15 files already downloaded" and len(fake.called("blob")) == 2


@pytest.mark.parametrize(
    "dataset, blob",
    [(PYTHON, f"datasets/{PYTHON}/files/cifar-100-python/train"), (IMAGES, f"datasets/{IMAGES}/archive.zip")],
    ids=["file", "zip"],
)
def test_a_cut_download_leaves_a_part_file_and_the_next_run_resumes_it(fake, tmp_path, monkeypatch, dataset, blob):
    monkeypatch.setattr(kaggle_io.client, "ATTEMPTS", 1)
    dest = tmp_path / "dest"
    fake.cut(blob, 3 * 4096 + 100)  # serving() makes the client write 4096-byte chunks
    with pytest.raises(KaggleCifarError, match="cannot reach Kaggle .*IncompleteRead"):
        kaggle_io.download_dataset(dataset, dest)
    parts = list(dest.rglob("*.part"))
    assert len(parts) == 1 and not parts[0].with_suffix("").exists()
    kept = parts[0].stat().st_size
    assert 0 < kept <= 3 * 4096 + 100

    kaggle_io.download_dataset(dataset, dest)
    assert f"bytes={kept}-" in [r.headers.get("Range") for r in fake.called("blob")]
    assert not list(dest.rglob("*.part"))
    assert len(read_source(dest)["train"]) in (40, 10)


def test_kaggle_zip_wrapper_of_a_file_is_unwrapped(fake, sources, tmp_path):
    fake.zipped.add("cifar-100-python/meta")
    kaggle_io.download_dataset(PYTHON, tmp_path / "dest")
    assert f"/blobs/datasets/{PYTHON}/files/cifar-100-python/meta.zip" in [r.path for r in fake.called("blob")]
    same_files(tmp_path / "dest", sources[PYTHON])


def test_a_file_of_the_wrong_size_is_not_kept(fake, tmp_path):
    fake.listed_sizes["cifar-100-python/meta"] = 5
    with pytest.raises(KaggleCifarError, match="downloading cifar-100-python/meta: got .* bytes, the file list says 5"):
        kaggle_io.download_dataset(PYTHON, tmp_path / "dest")
    assert not (tmp_path / "dest" / "cifar-100-python" / "meta").exists()
    assert not list((tmp_path / "dest").rglob("*.part"))


def test_unknown_and_forbidden_datasets_are_explained(fake, tmp_path):
    with pytest.raises(KaggleCifarError, match=r"\(404 Dataset not found\); is --dataset 'alice/nope' right\?"):
        kaggle_io.download_dataset("alice/nope", tmp_path / "dest")
    fake.rules_accepted = False
    with pytest.raises(
        KaggleCifarError,
        match=r"Kaggle refused \(403 .*\); open https://www.kaggle.com/datasets/"
        r"alice/cifar100-python .* accept the dataset's terms",
    ):
        kaggle_io.download_dataset(PYTHON, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() or not any((tmp_path / "dest").rglob("*"))


@pytest.mark.parametrize("bad", ["cifar100", "a/b/c/d", "/x", "alice/../x"])
def test_a_malformed_dataset_name_needs_no_network(fake, tmp_path, bad):
    with pytest.raises(KaggleCifarError, match="expected OWNER/NAME"):
        kaggle_io.download_dataset(bad, tmp_path / "dest")
    assert fake.requests == []


def test_zip_members_leaving_the_folder_or_links_are_refused(tmp_path):
    for name, member in (("up.zip", "../escape.txt"), ("abs.zip", "/tmp/escape.txt"), ("link.zip", "inner/link")):
        archive = tmp_path / name
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("fine.txt", b"ok")
            info = zipfile.ZipInfo(member)
            if name == "link.zip":
                info.external_attr = 0o120777 << 16
            zf.writestr(info, b"/etc/passwd")
        dest = tmp_path / f"dest-{name}"
        with pytest.raises(KaggleCifarError, match="is a link or points outside"):
            kaggle_io.downloads._unpack_dataset_zip(archive, dest)
        assert not dest.exists() and not (tmp_path / "escape.txt").exists()


def test_a_damaged_dataset_zip_is_dropped_and_named(tmp_path):
    archive = tmp_path / ".x.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.bin", b"A" * 1000)
    data = bytearray(archive.read_bytes())
    data[data.index(b"A" * 100) + 10] = ord("B")  # same size, wrong CRC
    archive.write_bytes(bytes(data))
    with pytest.raises(KaggleCifarError, match=r"the dataset's zip from Kaggle is damaged \(Bad CRC-32"):
        kaggle_io.downloads._unpack_dataset_zip(archive, tmp_path / "dest")
    assert not archive.exists() and not (tmp_path / "dest" / "a.bin").exists()
