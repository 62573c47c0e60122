"""Archives -> image cache, with its floors side by side in one run:

    stdlib  Python's lzma decompressing test.7z's one LZMA2 stream (FORMAT_RAW; py7zr parses the header), output
            dropped: the floor for test.7z alone
    7zz     `7zz t test.7z`: native 7-Zip decompressing (and CRC-checking) test.7z alone, when 7-Zip is installed
    naive   both archives the usual way: py7zr extractall to a folder, then cv2.imread every PNG
    ours    kagglecifar.cache.build.build_cache of both splits into a cold cache (what `fetch --from-dir` runs)

    python benchmarks/bench_cache.py                         # the full-size replica (built once if missing)
    python benchmarks/bench_cache.py --data bench-data/small

Each method runs in a fresh process, one after another. Memory: peak_tree_rss_mb is the peak resident memory
of the method's whole process tree, sampled every 50 ms (ours writes the cache with pwrite, so the cache's
pages are not in it); cpu_seconds includes children.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]  # this checkout's
import common  # noqa: E402

SPLITS = ("train", "test")


def stdlib(data: Path, work: Path) -> dict:
    """Decompress test.7z's packed stream with the standard library's lzma; drop the output."""
    import lzma

    import py7zr

    from kagglecifar.cache import archive

    path = data / "test.7z"
    with py7zr.SevenZipFile(path) as z:  # py7zr parses the header
        images = sum(not m.is_directory for m in z.files)
        stream = archive.lzma_stream(z.header.main_streams, z.afterheader)
    if stream is None:
        raise SystemExit(f"{path}: not one plain LZMA/LZMA2 folder")
    started, total = time.perf_counter(), 0
    decoder = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=stream.filters)
    with open(path, "rb") as f:
        f.seek(stream.start)
        left = stream.packed_size
        while left:
            data = f.read(min(1 << 20, left))
            left -= len(data)
            total += len(decoder.decompress(data))
    return {
        "images": images,
        "decompressed_mb": round(total / 1e6, 1),
        "decode_only_seconds": round(time.perf_counter() - started, 2),
    }


def naive(data: Path, work: Path) -> dict:
    """py7zr extract-to-folder, then read every PNG back with cv2.imread into one RGB array per split."""
    import cv2
    import numpy as np
    import py7zr

    images = 0
    for split in SPLITS:
        with py7zr.SevenZipFile(data / f"{split}.7z") as z:
            z.extractall(path=work)
        paths = sorted((work / split).glob("*.png"), key=lambda p: int(p.stem))
        array = np.zeros((len(paths), 32, 32, 3), np.uint8)
        for row, path in enumerate(paths):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                continue
            if image.shape[:2] != (32, 32):
                image = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)
            array[row] = image[:, :, ::-1]
        images += len(array)
    return {"images": images}


def ours(data: Path, work: Path) -> dict:
    from kagglecifar.cache.build import build_cache

    built = build_cache(data, work, force=True)
    return {"images": sum(s.count for s in built.splits.values())}


METHODS = {"stdlib": stdlib, "naive": naive, "ours": ours}


def child(method: str, data: Path, work: Path) -> None:
    """Run one method and print its measurements as the last line of JSON."""
    started, cpu_before = time.perf_counter(), sum(os.times()[:4])
    result = METHODS[method](data, work)
    seconds = time.perf_counter() - started
    cpu = sum(os.times()[:4]) - cpu_before
    print(
        json.dumps(
            {
                **result,
                "seconds": round(seconds, 2),
                "images_per_s": round(result["images"] / seconds),
                "cpu_seconds": round(cpu, 2),
                "peak_rss_mb": round(common.peak_rss_mb()),
            }
        )
    )


def seven_zip(archive: Path) -> dict | None:
    exe = shutil.which("7zz") or shutil.which("7z")
    if exe is None:
        return None
    version = subprocess.run([exe], capture_output=True, text=True).stdout.strip().splitlines()[0]
    started = time.perf_counter()
    subprocess.run([exe, "t", "-bd", str(archive)], check=True, stdout=subprocess.DEVNULL)
    return {
        "method": f"`{Path(exe).name} t` ({version}): native decompression and CRC check of test.7z",
        "seconds": round(time.perf_counter() - started, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="a competition download (default: the full-size replica)")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed afterwards)")
    p.add_argument("--method", choices=list(METHODS), help=argparse.SUPPRESS)  # the child process
    args = p.parse_args()
    data = (args.data or common.ensure_replica("full")).resolve()
    if args.method:
        child(args.method, data, args.work)
        return

    for split in SPLITS:  # read once so no method pays for a cold page cache
        with open(data / f"{split}.7z", "rb") as f:
            while f.read(1 << 24):
                pass
    load_before = os.getloadavg()
    results = {}
    for method in ("stdlib", "7zz", "ours", "naive"):
        print(f"bench_cache: {method} on {data} ...", file=sys.stderr, flush=True)
        if method == "7zz":
            results[method] = seven_zip(data / "test.7z")
            continue
        work = Path(tempfile.mkdtemp(prefix=f"bench_cache_{method}_", dir=args.work))
        try:
            results[method] = common.run_measured(
                [sys.executable, __file__, "--method", method, "--data", str(data), "--work", str(work)]
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    floor, new, base = results["stdlib"], results["ours"], results["naive"]
    common.write_result(
        "archive_to_cache",
        {
            "data": str(data),
            "archive_mb": {split: round((data / f"{split}.7z").stat().st_size / 1e6, 1) for split in SPLITS},
            "load_average_before_after": [round(x, 2) for x in (*load_before, *os.getloadavg())],
            "stdlib": {
                "method": "test.7z only: py7zr parses the header, lzma.LZMADecompressor(FORMAT_RAW) decodes "
                "its LZMA2 stream, output dropped",
                **floor,
            },
            "7zz": results["7zz"],
            "ours": {
                "method": "both splits: kagglecifar.cache.build.build_cache into a cold cache (stdlib lzma, "
                "both archives at once, PNGs decoded by threads)",
                **new,
            },
            "naive": {"method": "both splits: py7zr extractall to a folder, then cv2.imread each PNG", **base},
            "ours_over_stdlib_test": round(new["seconds"] / floor["seconds"], 3),
            "naive_over_ours": round(base["seconds"] / new["seconds"], 2),
        },
        command=" ".join(["python", "benchmarks/bench_cache.py", *sys.argv[1:]]),
    )


if __name__ == "__main__":
    main()
