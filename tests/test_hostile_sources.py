"""Sizes taken on trust and silent renumbering: every size a source declares (tar member headers, pickled
array shapes, image headers, .npz array headers, 7z member sizes) is checked against what CIFAR data can be
before anything is allocated, and image ids come from the file names or are refused / said in one line."""

import pickle
import random
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib

import cv2
import numpy as np
import pytest
from cifar_sources import add_member, make_image_folder, png

from kagglecifar.cache.archive import check_members
from kagglecifar.cache.formats import read_source
from kagglecifar.cache.formats.safe_pickle import load_pickle
from kagglecifar.errors import KaggleCifarError
from kagglecifar.inference.predict import Predictions, load_probs, save_probs

GIB = 1 << 30


def huge_member_tar(path, declared: int, name="cifar-10-batches-py/data_batch_1", body=b"\0" * 4096):
    """A gzip'd tar whose member header declares `declared` bytes, followed by only `body`."""
    info = tarfile.TarInfo(name)
    info.size = declared
    raw = info.tobuf(format=tarfile.GNU_FORMAT) + body
    with open(path, "wb") as f:
        import gzip

        f.write(gzip.compress(raw))
    return path


@pytest.mark.parametrize(
    "declared,name",
    [
        (50 * 10**9, "cifar-10-batches-py/data_batch_1"),
        (int(3.5 * GIB), "cifar-10-batches-py/test_batch"),
        (300 << 20, "cifar-100-python/train"),
        (2 * GIB, "cifar-10-batches-py/readme.html"),  # not a CIFAR file: its size counts all the same
        (8**11 - 1, "cifar-100-python/meta"),
    ],
)
def test_tar_member_headers_declaring_too_much_are_refused_before_reading(tmp_path, declared, name):
    archive = huge_member_tar(tmp_path / "cifar-10-python.tar.gz", declared, name)
    assert archive.stat().st_size < 10_000
    with pytest.raises(KaggleCifarError) as caught:
        read_source(archive)
    assert str(archive) in str(caught.value) and len(str(caught.value).splitlines()) == 1


def test_many_members_together_over_the_bound_are_refused_while_streaming(tmp_path, monkeypatch):
    """A small archive of highly compressible members, each within the per-member bound, that together hold far
    more than CIFAR data (the bounds scaled down 64x so the test stays small): refused once they pass the bound,
    before the rest is decompressed."""
    from kagglecifar.cache.formats import cifar_python

    monkeypatch.setattr(cifar_python, "MAX_MEMBER_BYTES", cifar_python.MAX_MEMBER_BYTES >> 6)
    monkeypatch.setattr(cifar_python, "MAX_DATA_BYTES", cifar_python.MAX_DATA_BYTES >> 6)
    monkeypatch.setattr(cifar_python, "MAX_ARCHIVE_BYTES", cifar_python.MAX_ARCHIVE_BYTES >> 6)
    rng = random.Random(0)
    for trial in range(4):
        path = tmp_path / f"cifar-{trial}.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for name in [f"cifar-10-batches-py/junk{i}" for i in range(40)]:
                add_member(tar, name, b"\0" * rng.randint(1 << 20, 4 << 20))
        assert path.stat().st_size < 2 << 20
        with pytest.raises(KaggleCifarError) as caught:
            read_source(path)
        assert "refusing" in str(caught.value), caught.value


def test_a_pickle_declaring_a_huge_array_is_refused_without_allocating_it():
    from numpy.core import multiarray

    class Huge:
        def __init__(self, shape):
            self.shape = shape

        def __reduce__(self):
            return multiarray._reconstruct, (np.ndarray, self.shape, b"b")

    for shape in [(10**12,), (10**6, 10**6), (2**62,), (1 << 28, 2), (-1,), 10**15]:
        data = pickle.dumps({b"data": Huge(shape)}, protocol=2)
        assert len(data) < 500
        with pytest.raises(KaggleCifarError):
            load_pickle(data, "crafted")


MEMORY_PROBE = """
import resource, sys
from pathlib import Path
from kagglecifar.errors import KaggleCifarError
kind, path = sys.argv[1], Path(sys.argv[2])
try:
    if kind == "npz":
        from kagglecifar.inference.predict import load_probs
        load_probs(path)
    else:
        from kagglecifar.cache.formats import read_source
        read_source(path)
    print("accepted")
except KaggleCifarError as exc:
    print("refused", str(exc).splitlines()[0][:200])
# VmHWM: this process's own peak (ru_maxrss on Linux keeps the forking parent's figure across exec)
status = Path("/proc/self/status")
peak = [int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM:")] if (
    status.is_file()
) else [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]
print("peak_mib", peak[0] // 1024)
"""


def peak_memory(kind, path):
    """(answer, peak resident MiB) of reading `path` in a fresh process: a coarse bound, not a timing."""
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, kind, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    return lines[0], int(lines[-1].split()[1])


def npy_header(shape, descr="<f4") -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def crafted_npz(path, shapes: dict, descrs: dict | None = None, body=b"\0" * 64):
    descrs = {"ids": "<i8", "probs": "<f4", "confidence": "<f4", "bad": "|b1", "classes": "<U5", "tta": "<U4"} | (
        descrs or {}
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, shape in shapes.items():
            z.writestr(f"{name}.npy", npy_header(shape, descrs[name]) + body)
    return path


def test_declared_sizes_stay_bounded_in_memory(tmp_path):
    """A 5 kB tar declaring 50 GB, a 2 kB .npz declaring 7 PiB: refused, the process staying far under 3 GiB."""
    tar = huge_member_tar(tmp_path / "cifar-10-python.tar.gz", 50 * 10**9)
    npz = crafted_npz(
        tmp_path / "p.npz",
        {"ids": (10,), "probs": (1 << 50, 8), "confidence": (10,), "bad": (10,), "classes": (10,), "tta": ()},
    )
    assert npz.stat().st_size < 2048
    for kind, path in (("source", tar), ("npz", npz)):
        answer, peak = peak_memory(kind, path)
        assert answer.startswith("refused"), answer
        assert peak < 1536, (kind, peak)  # importing torch alone takes several hundred MiB


def good_predictions(n=6, classes=("cat", "dog", "frog")):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(len(classes)), n).astype(np.float32)
    return Predictions(np.arange(1, n + 1), probs, probs.max(1), np.zeros(n, bool), list(classes), "flip")


@pytest.mark.parametrize(
    "shapes,descrs",
    [
        ({"probs": (1 << 50, 8)}, None),
        ({"ids": (10**12,)}, None),
        ({"probs": (6, 10**7)}, None),
        ({"classes": (10**9,)}, None),
        ({"classes": (3,)}, {"classes": "<U100000000"}),
        ({"probs": (6, 3)}, {"probs": "|O"}),
        ({"probs": (6, 3, 2)}, None),
        ({"tta": (5,)}, None),
        ({"bad": (4_000_000,), "ids": (4_000_000,), "confidence": (4_000_000,), "probs": (4_000_000, 90)}, None),
    ],
)
def test_npz_headers_are_checked_before_numpy_allocates(tmp_path, shapes, descrs):
    base = {"ids": (6,), "probs": (6, 3), "confidence": (6,), "bad": (6,), "classes": (3,), "tta": ()}
    path = crafted_npz(tmp_path / "p.npz", base | shapes, descrs)
    with pytest.raises(KaggleCifarError) as caught:
        load_probs(path)
    assert str(path) in str(caught.value) and len(str(caught.value)) < 400


def test_npz_contents_that_disagree_are_one_line(tmp_path):
    good = good_predictions()
    save_probs(good, tmp_path / "good.npz")
    assert load_probs(tmp_path / "good.npz").classes == good.classes
    broken = [
        dict(probs=np.full((6, 3), np.nan, np.float32)),
        dict(probs=np.full((6, 3), 7, np.float32)),
        dict(ids=np.array([1, 1, 2, 3, 4, 5])),
        dict(classes=np.array(["cat", "cat", "dog"])),
        dict(tta=np.array("nosuchmode")),
        dict(confidence=np.zeros(5, np.float32)),
    ]
    for i, change in enumerate(broken):
        arrays = dict(
            ids=good.ids, probs=good.probs, confidence=good.confidence, bad=good.bad, classes=np.array(good.classes)
        )
        arrays["tta"] = np.array(good.tta)
        arrays.update(change)
        path = tmp_path / f"broken{i}.npz"
        np.savez(path, **arrays)
        with pytest.raises(KaggleCifarError):
            load_probs(path)


def test_7z_member_sizes_and_counts_are_checked_from_the_header(tmp_path):
    rng = random.Random(3)
    for _ in range(50):
        count = rng.randint(1, 20)
        sizes = [rng.randint(1, 4000) for _ in range(count)]
        huge = rng.randrange(count)
        sizes[huge] = rng.choice([17 << 20, 1 << 40, 2**62, 50 * 10**9])
        names = [f"test/{i + 1}.png" for i in range(count)]
        with pytest.raises(KaggleCifarError) as caught:
            check_members(
                tmp_path / "test.7z",
                "test",
                names,
                [False] * count,
                [False] * count,
                [False] * count,
                sizes,
                [-1] * count,
            )
        assert "declares" in str(caught.value)
    members = check_members(tmp_path / "t.7z", "test", ["test/1.png"], [False], [False], [False], [3000], [-1])
    assert members.ids.tolist() == [1]


# ---- images: dimensions from the header ------------------------------------------------------------------


def png_header_only(width, height, depth=16, colour=6) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    )


def jpeg_header_only(width, height) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0" + sof + b"\xff\xd9"


def test_image_dimensions_come_from_the_header_and_large_ones_are_refused_by_name(tmp_path):
    from kagglecifar.cache.decode import image_size

    rng = random.Random(4)
    real = [
        (cv2.imencode(".png", np.zeros((4100, 20), np.uint8))[1].tobytes(), (20, 4100)),
        (cv2.imencode(".jpg", np.zeros((10, 5000, 3), np.uint8))[1].tobytes(), (5000, 10)),
        (cv2.imencode(".png", np.zeros((7, 9, 3), np.uint16))[1].tobytes(), (9, 7)),
        (cv2.imencode(".jpg", np.zeros((33, 31), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes(), (31, 33)),
    ]
    crafted = []
    for _ in range(12):
        width, height = rng.choice([rng.randint(1, 4096), rng.randint(4097, 65535)]), rng.randint(1, 65535)
        maker = rng.choice([png_header_only, jpeg_header_only])
        crafted.append((maker(width, height), (width, height)))
    for i, (data, size) in enumerate(real + crafted):
        assert image_size(data) == size
        root = tmp_path / f"folder{i}"
        make_image_folder(root, {"cat": 2, "dog": 2})
        suffix = ".png" if data[:4] == b"\x89PNG" else ".jpg"
        (root / "train" / "cat" / f"big{suffix}").write_bytes(data)
        if max(size) > 4096:
            with pytest.raises(KaggleCifarError) as caught:
                read_source(root)
            assert f"big{suffix}" in str(caught.value) and f"{size[0]}x{size[1]}" in str(caught.value)
        else:
            train = read_source(root)["train"]
            assert len(train.ids) == 5


# ---- ids from file names ------------------------------------------------------------------------------------


def test_test_ids_come_from_file_names_never_renumbered(tmp_path):
    rng = random.Random(5)
    for trial in range(8):
        root = tmp_path / f"t{trial}"
        make_image_folder(root, {"cat": 2, "dog": 2})
        ids = rng.sample(range(1, 10**6), rng.randint(1, 12))
        (root / "test").mkdir()
        for image_id in ids:
            suffix = rng.choice([".png", ".jpg"])
            data = (
                png(np.full((32, 32, 3), image_id % 256, np.uint8))
                if suffix == ".png"
                else cv2.imencode(".jpg", np.full((32, 32, 3), image_id % 256, np.uint8))[1].tobytes()
            )
            (root / "test" / f"{image_id}{suffix}").write_bytes(data)
        test = read_source(root)["test"]
        for name, image_id in zip(test.names, test.ids.tolist()):
            assert name.split("/")[-1].split(".")[0] == str(image_id)
        assert sorted(test.ids.tolist()) == sorted(ids)


def test_the_issues_folder_keeps_10_as_10_and_refuses_3_twice(tmp_path, capsys):
    make_image_folder(tmp_path, {"cat": 2, "dog": 2})
    (tmp_path / "test").mkdir()
    for image_id in (1, 2, 3, 10, 11):
        (tmp_path / "test" / f"{image_id}.png").write_bytes(png(np.full((32, 32, 3), image_id, np.uint8)))
    test = read_source(tmp_path)["test"]
    assert dict(zip(test.names, test.ids.tolist()))["test/10.png"] == 10
    (tmp_path / "test" / "3.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))[1].tobytes())
    with pytest.raises(KaggleCifarError) as caught:
        read_source(tmp_path)
    assert "test/3.jpg" in str(caught.value) and "test/3.png" in str(caught.value)
    (tmp_path / "test" / "3.jpg").rename(tmp_path / "test" / "cat.jpg")
    with pytest.raises(KaggleCifarError) as caught:
        read_source(tmp_path)
    assert "test/cat.jpg" in str(caught.value) and "integer" in str(caught.value)


def test_names_that_are_no_ids_are_numbered_and_said_in_one_line(tmp_path, capsys):
    make_image_folder(tmp_path, {"cat": 2, "dog": 2})
    (tmp_path / "test").mkdir()
    for name in ("b", "a", "c"):
        (tmp_path / "test" / f"{name}.png").write_bytes(png(np.zeros((32, 32, 3), np.uint8)))
    capsys.readouterr()
    test = read_source(tmp_path)["test"]
    assert test.names == ["test/a.png", "test/b.png", "test/c.png"] and test.ids.tolist() == [1, 2, 3]
    said = [line for line in capsys.readouterr().err.splitlines() if "numbered" in line]
    assert len(said) == 1 and "test/a.png" in said[0], said
