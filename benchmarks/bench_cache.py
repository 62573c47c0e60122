"""Archive -> image array: the usual way (extract to a folder, cv2.imread every PNG) against build_cache.

    python benchmarks/bench_cache.py                         # the full-size replica (built once if missing)
    python benchmarks/bench_cache.py --data bench-data/small --split test

Each method runs in a fresh process. Memory: peak_tree_rss_mb is the peak resident memory of the method's
whole process tree (sampled every 50 ms: for ours, the main process plus the PNG-decoding process that writes
the memory-mapped cache); peak_rss_mb is the main process alone (getrusage). cpu_seconds includes children.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def baseline(archive: Path, work: Path) -> int:
    """py7zr extract-to-folder, then read every PNG back with cv2.imread into one RGB array."""
    import cv2
    import numpy as np
    import py7zr

    with py7zr.SevenZipFile(archive) as z:
        z.extractall(path=work)
    paths = sorted((work / archive.stem).glob("*.png"), key=lambda p: int(p.stem))
    images = np.zeros((len(paths), 32, 32, 3), np.uint8)
    for row, path in enumerate(paths):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            continue
        if image.shape[:2] != (32, 32):
            image = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)
        images[row] = image[:, :, ::-1]
    return len(images)


def ours(data: Path, split: str, work: Path) -> int:
    from kagglecifar.cache.build import build_cache

    return build_cache(data, work, splits=(split,), force=True).splits[split].count


def child(method: str, data: Path, split: str, work: Path) -> None:
    """Run one method and print its measurements as the last line of JSON."""
    started, cpu_before = time.perf_counter(), sum(os.times()[:4])
    images = baseline(data / f"{split}.7z", work) if method == "baseline" else ours(data, split, work)
    seconds = time.perf_counter() - started
    cpu = sum(os.times()[:4]) - cpu_before  # this process and its finished children (a decoding process)
    print(json.dumps({"images": images, "seconds": round(seconds, 2), "images_per_s": round(images / seconds),
                      "cpu_seconds": round(cpu, 2), "peak_rss_mb": round(common.peak_rss_mb())}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="a competition download (default: the full-size replica)")
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed afterwards)")
    p.add_argument("--method", choices=["baseline", "ours"], help=argparse.SUPPRESS)  # the child process
    args = p.parse_args()
    data = (args.data or common.ensure_replica("full")).resolve()
    if args.method:
        child(args.method, data, args.split, args.work)
        return

    archive = data / f"{args.split}.7z"
    with open(archive, "rb") as f:  # read once so neither method pays for a cold page cache
        while f.read(1 << 24):
            pass
    results = {}
    for method in ("baseline", "ours"):
        work = Path(tempfile.mkdtemp(prefix=f"bench_cache_{method}_", dir=args.work))
        try:
            print(f"bench_cache: {method} on {archive} ...", file=sys.stderr, flush=True)
            results[method] = common.run_measured(
                [sys.executable, __file__, "--method", method, "--data", str(data), "--split", args.split,
                 "--work", str(work)])
        finally:
            shutil.rmtree(work, ignore_errors=True)
    base, new = results["baseline"], results["ours"]
    common.write_result("archive_to_cache", {
        "data": str(data), "split": args.split, "archive_mb": round(archive.stat().st_size / 1e6, 1),
        "baseline": {"method": "py7zr extractall to a folder, then cv2.imread each PNG", **base},
        "ours": {"method": "kagglecifar.cache.build_cache: members streamed into a memory map, PNGs decoded "
                           "by a second process for splits of 10,000+ images", **new},
        "speedup": round(base["seconds"] / new["seconds"], 2),
        "peak_memory_ratio": round(new["peak_tree_rss_mb"] / base["peak_tree_rss_mb"], 2),
    }, command=" ".join(["python", "benchmarks/bench_cache.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
