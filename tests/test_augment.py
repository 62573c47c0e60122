"""Augmentation presets and custom pipeline files (kagglecifar/augment.py)."""

import albumentations as A
import numpy as np
import pytest

from kagglecifar.data.augment import PRESETS, augment_batch, build_pipeline
from kagglecifar.errors import KaggleCifarError


def gradient_images(count):
    """Images whose every pixel is distinct, so any crop or flip is recognisable."""
    y, x = np.mgrid[0:32, 0:32]
    image = np.stack([x * 8, y * 8, (x + y) * 4], axis=-1).astype(np.uint8)
    return np.repeat(image[None], count, axis=0)


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_keep_shape_and_dtype(preset):
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    pipeline = build_pipeline(preset)
    if preset == "none":
        assert pipeline is None
        return
    out = augment_batch(pipeline, images, (0, 0, 0))
    assert out.shape == images.shape and out.dtype == np.uint8
    assert not np.array_equal(out, images)


def test_standard_pads_by_reflection_crops_and_flips():
    images = gradient_images(64)
    out = augment_batch(build_pipeline("standard"), images, (1, 0, 0))
    padded = np.pad(images[0], ((4, 4), (4, 4), (0, 0)), mode="reflect")
    seen = set()
    for image in out:
        matches = [
            (dy, dx, flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if np.array_equal(
                image,
                (padded[dy : dy + 32, dx : dx + 32, :][:, ::-1] if flip else padded[dy : dy + 32, dx : dx + 32, :]),
            )
        ]
        assert matches, "output is not a reflect-padded 32x32 crop, flipped or not"
        seen.add(matches[0])
    assert {flip for _, _, flip in seen} == {False, True}
    assert len({(dy, dx) for dy, dx, _ in seen}) > 10  # many different offsets, not just the centre


def test_augmentation_depends_only_on_the_seed():
    images = gradient_images(32)
    pipeline = build_pipeline("strong")
    first = augment_batch(pipeline, images, (3, 1, 5))
    augment_batch(pipeline, images, (9, 9, 9))  # state left over from another batch must not matter
    assert np.array_equal(first, augment_batch(build_pipeline("strong"), images, (3, 1, 5)))
    assert not np.array_equal(first, augment_batch(pipeline, images, (3, 2, 5)))


@pytest.mark.parametrize("suffix,data_format", [(".json", "json"), (".yaml", "yaml")])
def test_custom_pipeline_file_round_trip(tmp_path, suffix, data_format):
    path = tmp_path / f"my-aug{suffix}"
    A.save(build_pipeline("strong"), str(path), data_format=data_format)
    loaded = build_pipeline(str(path))
    images = gradient_images(16)
    assert np.array_equal(
        augment_batch(loaded, images, (0, 1, 2)), augment_batch(build_pipeline("strong"), images, (0, 1, 2))
    )


def test_bad_pipeline_specs_give_clear_errors(tmp_path):
    with pytest.raises(KaggleCifarError, match="strng: not a preset"):
        build_pipeline("strng")
    with pytest.raises(KaggleCifarError, match="no such pipeline file"):
        build_pipeline(str(tmp_path / "missing.json"))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(KaggleCifarError, match="garbage.json: not a readable albumentations pipeline"):
        build_pipeline(str(garbage))
    floats = tmp_path / "floats.json"
    A.save(A.Compose([A.HorizontalFlip(), A.ToFloat()]), str(floats))
    with pytest.raises(KaggleCifarError, match="floats.json: pipeline must return uint8 32x32x3"):
        build_pipeline(str(floats))
