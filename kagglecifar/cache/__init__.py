"""The image cache. Reading it needs only this package's store (numpy, no archive library):

    from kagglecifar.cache import load_split, read_manifest
    from kagglecifar.cache.build import build_cache      # fetch: the competition archives -> the cache

store: the format and reading it back; build: archives -> cache; archive: 7z reading; decode: PNG -> pixels.
"""
from kagglecifar.cache.store import (CACHE_VERSION, IMAGE_SHAPE, SPLITS, ImageSet, SplitWriter, is_complete,
                                     load_split, read_manifest, split_dir, write_split)

__all__ = ["CACHE_VERSION", "IMAGE_SHAPE", "SPLITS", "ImageSet", "SplitWriter", "is_complete", "load_split",
           "read_manifest", "split_dir", "write_split"]
