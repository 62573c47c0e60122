"""Input pipeline: augmented batches/s of kagglecifar's loaders against a plain torchvision DataLoader.

    python benchmarks/bench_loader.py                                  # train cache of the full-size replica
    python benchmarks/bench_loader.py --from-zip ../shared/data/cifar10/train.zip   # the same images, from JPEGs
    python benchmarks/bench_loader.py --data-dir bench-data/c2/small --batches 10

All produce the same thing, ready for a model: float NCHW batches in [0, 1] on the CPU, augmented with
reflect-pad 4, random 32x32 crop and horizontal flip, in shuffled order.
    torchvision  PIL image per sample (as torchvision.datasets.CIFAR10 does), RandomCrop(32, padding=4,
                 padding_mode="reflect"), RandomHorizontalFlip, ToTensor, default collate
    ours         kagglecifar.data.loading.TrainLoader: uint8 array in memory, albumentations per batch in workers,
                 uint8 batches made float NCHW by to_model_input (on the GPU when training there)
    batched      kagglecifar.data.device_loader.DeviceLoader: the same albumentations pipeline compiled by
                 batch_augment into per-sample-random tensor ops on the whole batch (no workers; on a GPU
                 this runs there)
    ours-none    slices of one in-memory tensor without augmentation (the ceiling)
at 0 and 2 worker processes. The clock starts when the first batch arrives (worker start-up excluded).
A second pipeline, `heavy` (the standard one + CoarseDropout 8x8 p=0.5 + ColorJitter 0.2/0.2/0.2 hue 0
p=0.5), is timed with albumentations workers and batched, side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def train_cache(data_dir: Path | None) -> Path:
    """A data folder with a train cache: the one given, or the full-size replica's (built once)."""
    return data_dir or common.replica_data()


def zip_images(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every JPEG of a zip (the shared train.zip), decoded to uint8 RGB; labels are not needed here."""
    import zipfile

    import cv2

    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith(".jpg")]
        images = np.stack(
            [
                cv2.cvtColor(
                    cv2.imdecode(np.frombuffer(archive.read(n), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
                )
                for n in names
            ]
        )
    return images, np.zeros(len(images), np.int64)


def heavy_pipeline_file(folder: Path) -> Path:
    """The `heavy` pipeline saved as a file, as a user would pass it to --augment."""
    import albumentations as A

    from kagglecifar.data.augment import build_pipeline

    path = folder / "heavy.yaml"
    A.save(
        A.Compose(
            list(build_pipeline("standard").transforms)
            + [
                A.CoarseDropout(
                    num_holes_range=(1, 1), hole_height_range=(8, 8), hole_width_range=(8, 8), fill=0, p=0.5
                ),
                A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0, p=0.5),
            ]
        ),
        str(path),
        data_format="yaml",
    )
    return path


class TorchvisionLoader:
    """The usual torchvision pipeline, with TrainLoader's interface (len, .epoch(epoch, start)) for train()."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, workers: int = 0, seed: int = 0):
        import torch
        from PIL import Image
        from torch.utils.data import DataLoader, Dataset
        from torchvision import transforms

        augment = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4, padding_mode="reflect"),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
            ]
        )

        class PILImages(Dataset):
            def __len__(self):
                return len(images)

            def __getitem__(self, i):
                return augment(Image.fromarray(images[i])), int(labels[i])

        self.seed, self.generator = seed, torch.Generator()
        self.loader = DataLoader(
            PILImages(),
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=self.generator,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int, start: int = 0):
        self.generator.manual_seed(self.seed + epoch)
        batches = iter(self.loader)
        for _ in range(start):
            next(batches)
        return batches


def measure(loader, batches: int) -> dict:
    """Steady-state rate over `batches` batches after the first, each made float NCHW in [0, 1]."""
    from kagglecifar.models import to_model_input

    done, images, started = 0, 0, None
    for epoch in range(1000):
        for x, _ in loader.epoch(epoch):
            x = to_model_input(x, "cpu")
            if started is None:
                started = time.perf_counter()
                continue
            done, images = done + 1, images + len(x)
            if done == batches:
                seconds = time.perf_counter() - started
                return {
                    "batches": done,
                    "batch_size": len(x),
                    "seconds": round(seconds, 3),
                    "batches_per_s": round(done / seconds, 1),
                    "images_per_s": round(images / seconds),
                }
    raise ValueError("not enough batches")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, help="a data folder with a train cache (default: built from the replica)")
    p.add_argument("--from-zip", type=Path, help="decode the images from a zip of JPEGs instead (the shared train.zip)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--batches", type=int, default=100, help="batches timed per measurement")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads of this process (1: on a busy "
        "shared CPU, two OpenMP threads stall each other and every tensor op suffers)",
    )
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    import tempfile

    from kagglecifar.data.device_loader import choose_loader
    from kagglecifar.data.loading import TrainLoader

    if args.from_zip:
        data, (images, labels) = str(args.from_zip), zip_images(args.from_zip)
    else:
        from kagglecifar.cache import load_split

        data_dir = train_cache(args.data_dir)
        train = load_split(data_dir, "train", mmap=False)
        data, images, labels = str(data_dir), train.images[~train.bad], train.labels[~train.bad]
    folder = tempfile.TemporaryDirectory()
    pipelines = {"standard": "standard", "heavy": str(heavy_pipeline_file(Path(folder.name)))}

    def batched(augment):
        loader, line = choose_loader(images, labels, augment=augment, batch_size=args.batch_size, seed=0)
        assert "batched" in line, line
        return loader

    rows = []
    for pipeline, augment in pipelines.items():
        for workers in args.workers:
            loaders = {
                "ours": partial(
                    TrainLoader, images, labels, augment=augment, batch_size=args.batch_size, seed=0, workers=workers
                )
            }
            if pipeline == "standard":
                loaders["torchvision"] = partial(TorchvisionLoader, images, labels, args.batch_size, workers)
            if workers == 0:
                loaders["batched"] = partial(batched, augment)
                if pipeline == "standard":
                    loaders["ours-none"] = lambda: TrainLoader(
                        images, labels, augment="none", batch_size=args.batch_size, seed=0
                    )
            for name, make in loaders.items():
                row = {"pipeline": pipeline, "loader": name, "workers": workers, **measure(make(), args.batches)}
                print(row, file=sys.stderr, flush=True)
                rows.append(row)
    rate = {(r["pipeline"], r["loader"], r["workers"]): r["images_per_s"] for r in rows}
    speedup = {
        f"workers={w}": round(rate[("standard", "ours", w)] / rate[("standard", "torchvision", w)], 2)
        for w in args.workers
    }
    batched_speedup = {
        f"{p} vs ours workers={w}": round(rate[(p, "batched", 0)] / rate[(p, "ours", w)], 2)
        for p in pipelines
        for w in args.workers
    }
    batched_speedup.update(
        {
            f"standard vs torchvision workers={w}": round(
                rate[("standard", "batched", 0)] / rate[("standard", "torchvision", w)], 2
            )
            for w in args.workers
        }
    )
    common.write_result(
        "input_pipeline",
        {
            "data": data,
            "images": len(images),
            "pipelines": {
                "standard": "reflect-pad 4, random crop 32, h-flip",
                "heavy": "standard + CoarseDropout 8x8 p=0.5 + ColorJitter(0.2, 0.2, 0.2, hue=0) p=0.5",
            },
            "output": "float NCHW in [0, 1] on the CPU",
            "rows": rows,
            "speedup_ours_vs_torchvision": speedup,
            "speedup_batched": batched_speedup,
            "peak_rss_mb": round(common.peak_rss_mb()),
            "threads": args.threads,
            "load_average_1min": round(os.getloadavg()[0], 2),
        },
        " ".join(["python", "benchmarks/bench_loader.py", *sys.argv[1:]]),
    )


if __name__ == "__main__":
    main()
