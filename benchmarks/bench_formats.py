"""CIFAR-100 python format at full size: the usual loader (standard unpickler) against read_source + the cache.

    python benchmarks/make_cifar100_format.py --out DIR        # once: DIR/cifar-100-python.tar.gz
    python benchmarks/bench_formats.py --archive DIR/cifar-100-python.tar.gz

Methods, each in a fresh process, alternated `--repeats` times (the CPU is shared: compare within one run):
  standard  tarfile + pickle.load(encoding="bytes") + reshape, as CIFAR loaders do (unsafe on downloaded data)
  read      formats.read_source: restricted unpickler, validation, fine->coarse mapping
  cache     read, then cache.write_split of both splits (what fetch will do), timed together
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
import common  # noqa: E402

METHODS = ("standard", "read", "cache")


def standard(archive: Path) -> int:
    import pickle
    import tarfile

    import numpy as np

    count = 0
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.rsplit("/", 1)[-1] in ("train", "test"):
                doc = pickle.loads(tar.extractfile(member).read(), encoding="bytes")
                images = doc[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                labels = np.array(doc[b"fine_labels"])
                count += len(images) + 0 * len(labels)
    return count


def ours(archive: Path, write: bool) -> int:
    from kagglecifar import cache
    from kagglecifar.cache.formats import read_source

    splits = read_source(archive)
    if write:
        with tempfile.TemporaryDirectory() as work:
            for name, s in splits.items():
                cache.write_split(
                    Path(work), name, s.images, s.ids, s.classes, labels=s.labels, bad=s.bad, **s.manifest_fields()
                )
            assert cache.load_split(Path(work), "test").manifest["fine_to_coarse"]
    return sum(len(s) for s in splits.values())


def child(method: str, archive: Path) -> None:
    started, cpu_before = time.perf_counter(), sum(os.times()[:4])
    images = standard(archive) if method == "standard" else ours(archive, write=method == "cache")
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "images": images,
                "seconds": round(seconds, 2),
                "images_per_s": round(images / seconds),
                "cpu_seconds": round(sum(os.times()[:4]) - cpu_before, 2),
                "peak_rss_mb": round(common.peak_rss_mb()),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=METHODS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.archive)
    runs = {m: [] for m in METHODS}
    for _ in range(args.repeats):
        for method in METHODS:
            runs[method].append(
                common.run_measured([sys.executable, __file__, "--child", method, "--archive", str(args.archive)])
            )
    best = {m: min(r, key=lambda x: x["seconds"]) for m, r in runs.items()}
    result = {
        "archive": str(args.archive),
        "archive_mb": round(args.archive.stat().st_size / 1e6, 1),
        "runs": runs,
        "best": best,
        "read_over_standard_seconds": round(best["read"]["seconds"] / best["standard"]["seconds"], 2),
        "cache_over_standard_seconds": round(best["cache"]["seconds"] / best["standard"]["seconds"], 2),
    }
    common.write_result(
        "cifar100_format",
        result,
        "python benchmarks/bench_formats.py --archive <make_cifar100_format.py --out DIR>/cifar-100-python.tar.gz",
    )


if __name__ == "__main__":
    main()
