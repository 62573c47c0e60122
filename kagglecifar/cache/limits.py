"""What a competition 7z archive may declare before anything is allocated for it: Kaggle's hold 50,000 and
300,000 PNGs of 2-3 kB each."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kagglecifar.errors import KaggleCifarError

MAX_MEMBER_BYTES = 16 << 20  # per member, as the header declares
MAX_IMAGES = 2_000_000  # per split


class TooManyMembers(Exception):
    """The header's file list declares more members than any CIFAR split has."""

    def __init__(self, count: int):
        super().__init__(count)
        self.count = count


def check_member_count(count: int) -> None:
    if count > MAX_IMAGES + 1000:
        raise TooManyMembers(count)


def too_many_members(archive: Path, count: int) -> KaggleCifarError:
    return KaggleCifarError(
        f"{archive}: its header declares {count:,} members; CIFAR splits hold at most {MAX_IMAGES:,} images"
    )


def check_declared_sizes(archive: Path, image_count: int, sizes) -> None:
    """One line when the header declares more images, or a larger member, than CIFAR data has."""
    if image_count > MAX_IMAGES:
        raise KaggleCifarError(f"{archive}: declares {image_count:,} images; CIFAR splits hold at most {MAX_IMAGES:,}")
    declared = np.asarray(sizes, np.int64)
    if len(declared) and (declared.max() > MAX_MEMBER_BYTES or declared.min() < 0):
        k = int(np.argmax(declared > MAX_MEMBER_BYTES) if declared.max() > MAX_MEMBER_BYTES else np.argmin(declared))
        raise KaggleCifarError(
            f"{archive}: a member declares {int(declared[k]):,} bytes; a CIFAR image is a few kB (at most "
            f"{MAX_MEMBER_BYTES >> 20} MiB is accepted): refusing the archive"
        )
