"""Build a full-size CIFAR-100-format archive (cifar-100-python.tar.gz) from the real CIFAR-10 images here.

There is no CIFAR-100 copy on these machines; this exercises the format at its real size and shape:
50,000 real images (train.zip) split 40,000 train / 10,000 test (every 5th id), 100 fine classes (each CIFAR-10
class cut into 10 by brightness decile within the class: CLASS_0 darkest .. CLASS_9 brightest) in 20 coarse
classes (CLASS_dark = deciles 0-4, CLASS_bright = 5-9). The pickles are written as Python 2's cPickle wrote
the real ones (tests/cifar_sources.py).

    python benchmarks/make_cifar100_format.py --out /work/scratch-NAME/cifar100   # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import csv
import sys
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from cifar_sources import add_member, py2_pickle, rows_of  # noqa: E402

DATA = Path("/work/shared/data/cifar10")


def build(data: Path, out: Path, level: int) -> Path:
    with open(data / "trainLabels.csv", newline="") as f:
        labels = {int(row["id"]): row["label"] for row in csv.DictReader(f)}
    names = sorted(set(labels.values()))
    ids = np.array(sorted(labels), np.int64)
    images = np.zeros((len(ids), 32, 32, 3), np.uint8)
    with zipfile.ZipFile(data / "train.zip") as zf:
        for row, i in enumerate(ids.tolist()):
            bgr = cv2.imdecode(np.frombuffer(zf.read(f"{i}.jpg"), np.uint8), cv2.IMREAD_COLOR)
            images[row] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    cls = np.array([names.index(labels[i]) for i in ids.tolist()])
    brightness = images.reshape(len(ids), -1).mean(axis=1)
    decile = np.zeros(len(ids), np.int64)
    for c in range(len(names)):
        members = np.flatnonzero(cls == c)
        ranks = np.argsort(np.argsort(brightness[members], kind="stable"), kind="stable")
        decile[members] = ranks * 10 // len(members)
    fine, coarse = cls * 10 + decile, cls * 2 + decile // 5
    fine_names = [f"{n}_{d}" for n in names for d in range(10)]
    coarse_names = [f"{n}_{half}" for n in names for half in ("dark", "bright")]
    is_test = ids % 5 == 0
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cifar-100-python.tar.gz"
    tmp = path.with_name(path.name + ".partial")
    with tarfile.open(tmp, "w:gz", compresslevel=level) as tar:
        add_member(tar, "cifar-100-python/", None)
        for split, rows in (("train", ~is_test), ("test", is_test)):
            doc = {
                b"filenames": [f"{i}.png".encode() for i in ids[rows].tolist()],
                b"batch_label": split.encode(),
                b"fine_labels": fine[rows].tolist(),
                b"coarse_labels": coarse[rows].tolist(),
                b"data": rows_of(images[rows]),
            }
            add_member(tar, f"cifar-100-python/{split}", py2_pickle(doc))
        add_member(
            tar,
            "cifar-100-python/meta",
            py2_pickle(
                {
                    b"fine_label_names": [n.encode() for n in fine_names],
                    b"coarse_label_names": [n.encode() for n in coarse_names],
                }
            ),
        )
    tmp.rename(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--level", type=int, default=6, help="gzip level")
    args = parser.parse_args()
    path = build(args.data, args.out, args.level)
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
