"""The image cache. Reading it needs only this package's store (numpy, no archive library):

    from kagglecifar.cache import load_split, read_manifest
    from kagglecifar.cache.build import build_cache      # fetch: the competition archives -> the cache
    from kagglecifar.cache.sources import build_from_source  # fetch: CIFAR python data, image folders

store: the format and reading it back; build: archives -> cache; archive: 7z reading; decode: PNG -> pixels;
sources: the other source formats -> cache.
"""

from kagglecifar.cache.store import (
    CACHE_VERSION,
    IMAGE_SHAPE,
    SPLITS,
    ImageSet,
    SplitWriter,
    is_complete,
    labelled_classes,
    load_split,
    read_manifest,
    split_dir,
    write_split,
)

__all__ = [
    "CACHE_VERSION",
    "IMAGE_SHAPE",
    "SPLITS",
    "ImageSet",
    "SplitWriter",
    "is_complete",
    "labelled_classes",
    "load_split",
    "read_manifest",
    "split_dir",
    "write_split",
]
