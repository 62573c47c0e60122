"""The batched engine against albumentations 2.0.8: pixels where parameters are fixed, statistics where
they are drawn, determinism from the seed, and the one-line reason when a transform has no equivalent."""

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from kagglecifar.data.augment import build_pipeline
from kagglecifar.data.batch_augment import BatchAugment, compile_pipeline
from kagglecifar.data.batch_ops import (
    CONSTANT,
    REFLECT,
    REFLECT_101,
    REPLICATE,
    WRAP,
    PadCrop,
    contrast,
    gray,
    saturation,
)


def images(n=16, seed=0, size=32):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def engine(*transforms) -> BatchAugment:
    compiled = compile_pipeline(A.Compose(list(transforms)))
    assert isinstance(compiled, BatchAugment), compiled
    return compiled


def run(compiled, x, seed=(0, 0, 0)):
    return compiled(torch.from_numpy(x), seed).numpy()


def albumentations(transform, x):
    return np.stack([transform(image=image)["image"] for image in x])


# --- pixels ---------------------------------------------------------------------------------------


def test_flip_with_p_1_is_albumentations_flip():
    x = images()
    assert np.array_equal(run(engine(A.HorizontalFlip(p=1)), x), albumentations(A.HorizontalFlip(p=1), x))
    assert np.array_equal(run(engine(A.VerticalFlip(p=1)), x), albumentations(A.VerticalFlip(p=1), x))


@pytest.mark.parametrize("mode", [REFLECT_101, REFLECT, REPLICATE, WRAP, CONSTANT])
@pytest.mark.parametrize("padding", [4, (3, 5), (1, 2, 6, 0), 40])
def test_pad_then_crop_at_a_fixed_offset_is_albumentations(mode, padding):
    x = images(4, size=8 if padding == 40 else 32)  # 40 px around 8: OpenCV folds the reflection again
    pad = A.Pad(padding=padding, border_mode=mode, fill=(10, 200, 30))
    compiled = engine(pad, A.RandomCrop(height=x.shape[1], width=x.shape[2]))
    padded = albumentations(pad, x)
    step = compiled.steps[0]
    for y0, x0 in [(0, 0), (padded.shape[1] - x.shape[1], padded.shape[2] - x.shape[2]), (1, 2)]:
        y0, x0 = min(y0, padded.shape[1] - x.shape[1]), min(x0, padded.shape[2] - x.shape[2])
        expected = albumentations(A.Crop(x0, y0, x0 + x.shape[2], y0 + x.shape[1]), padded)
        params = {"y": torch.full((len(x),), y0), "x": torch.full((len(x),), x0)}
        assert np.array_equal(step.apply(torch.from_numpy(x), params).numpy(), expected)


def test_pad_alone_and_scalar_fill_are_albumentations():
    x = images(3)
    for pad in (A.Pad(padding=(2, 1, 0, 3), border_mode=CONSTANT, fill=200), A.Pad(padding=2, border_mode=REFLECT_101)):
        assert np.array_equal(run(engine(pad), x), albumentations(pad, x))


@pytest.mark.parametrize("fill", [0, 255, (1, 2, 3)])
def test_dropout_at_fixed_holes_is_albumentations(fill):
    x = images(2)
    holes = np.array([[3, 4, 11, 12], [20, 0, 32, 5]])  # x_min, y_min, x_max, y_max; the second at the edge
    transform = A.CoarseDropout(
        num_holes_range=(2, 2), hole_height_range=(1, 8), hole_width_range=(1, 12), fill=fill, p=1
    )
    expected = np.stack([transform.apply(image, holes=holes, seed=0) for image in x])
    step = engine(transform).steps[0]
    params = {"holes": torch.from_numpy(np.broadcast_to(holes, (len(x), 2, 4)).copy())}
    assert np.array_equal(step.apply(torch.from_numpy(x), params).numpy(), expected)


def test_gray_is_opencv_rgb2gray_bit_for_bit():
    x = images(64)
    expected = np.stack([cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in x])
    assert np.array_equal(gray(torch.from_numpy(x)).numpy(), expected)


@pytest.mark.parametrize("which", ["brightness", "contrast", "saturation"])
@pytest.mark.parametrize("factor", [0.0, 0.63, 0.8, 1.17, 1.2, 1.5])
def test_jitter_with_a_fixed_factor_is_albumentations(which, factor):
    factor = float(np.float32(factor))  # the engine draws float32 factors (no float64 on the device)
    x = images(32, seed=3)
    x[0] = 0  # a black image, and a saturated one, for the clipping paths
    x[1] = 255
    ranges = {"brightness": (1, 1), "contrast": (1, 1), "saturation": (1, 1), which: (factor, factor)}
    transform = A.ColorJitter(**ranges, hue=(0, 0), p=1)
    assert np.array_equal(run(engine(transform), x), albumentations(transform, x))


def test_jitter_in_a_fixed_order_is_albumentations():
    x = images(8, seed=5)
    transform = A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0, p=1)
    step = engine(transform).steps[0]
    factors = tuple(float(np.float32(f)) for f in (1.21, 0.83, 1.37))  # float32 draws
    for order in ([0, 1, 2, 3], [2, 3, 1, 0], [1, 0, 3, 2]):
        expected = np.stack([transform.apply(image, *factors, 0.0, order) for image in x])
        params = {
            "factors": torch.tensor(factors, dtype=torch.float32).view(3, 1).expand(3, len(x)),
            "order": torch.tensor(order).expand(len(x), 4),
            "on": torch.ones(len(x), dtype=torch.bool),
        }
        assert np.array_equal(step.apply(torch.from_numpy(x), params).numpy(), expected)


def test_saturation_and_contrast_match_over_many_random_factors():
    x = images(8, seed=9)
    for factor in np.random.default_rng(1).uniform(0.5, 1.5, 40).astype(np.float32).tolist():
        f = torch.full((len(x),), factor, dtype=torch.float32)
        for ours, theirs in ((saturation, "saturation"), (contrast, "contrast")):
            ranges = {"brightness": (1, 1), "contrast": (1, 1), "saturation": (1, 1), theirs: (factor, factor)}
            expected = albumentations(A.ColorJitter(**ranges, hue=0, p=1), x)
            assert np.array_equal(ours(torch.from_numpy(x), f).numpy(), expected), (theirs, factor)


# --- parameter statistics -------------------------------------------------------------------------


def test_flip_rate_is_p():
    x = np.zeros((4000, 4, 4, 3), np.uint8)
    x[:, :, 0] = 1  # left column marked
    compiled = compile_pipeline(A.Compose([A.HorizontalFlip(p=0.3)]), image_size=(4, 4))
    flipped = run(compiled, x)[:, 0, -1, 0] == 1
    assert 0.27 < flipped.mean() < 0.33


def test_translation_offsets_are_uniform_over_the_range():
    compiled = compile_pipeline(build_pipeline("standard"))
    params = compiled.sample(9000, (1, 2, 3), "cpu")[0]
    for axis in ("y", "x"):
        counts = np.bincount(params[axis].numpy(), minlength=9)
        assert len(counts) == 9  # offsets 0..8 in the 40x40 padded image
        assert counts.min() > 850 and counts.max() < 1150


def test_pad_with_p_below_1_keeps_unpadded_images_in_place():
    compiled = engine(A.Pad(padding=4, border_mode=REFLECT_101, p=0.25), A.RandomCrop(32, 32))
    params = compiled.sample(8000, 0, "cpu")[0]
    centred = ((params["y"] == 4) & (params["x"] == 4)).float().mean().item()
    # unpadded (0.75) always centred; padded (0.25) centred with chance 1/81
    assert 0.73 < centred < 0.78


def test_dropout_holes_have_the_configured_count_and_sizes():
    transform = A.CoarseDropout(
        num_holes_range=(1, 3), hole_height_range=(4, 10), hole_width_range=(2, 6), fill=0, p=0.5
    )
    holes = engine(transform).sample(6000, 7, "cpu")[0]["holes"]
    heights, widths = holes[..., 3] - holes[..., 1], holes[..., 2] - holes[..., 0]
    used = heights > 0
    per_image = used.sum(1)
    assert 0.47 < (per_image > 0).float().mean() < 0.53  # p
    counts = np.bincount(per_image[per_image > 0].numpy(), minlength=4)[1:]
    assert counts.min() > 0.28 * counts.sum()  # 1, 2, 3 holes equally likely
    assert set(heights[used].unique().tolist()) == set(range(4, 11))
    assert set(widths[used].unique().tolist()) == set(range(2, 7))
    assert (holes[..., 0] >= 0).all() and (holes[..., 2] <= 32).all()
    assert (holes[..., 1] >= 0).all() and (holes[..., 3] <= 32).all()


def test_dropout_fractional_sizes_scale_with_the_image():
    transform = A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.25, 0.5), hole_width_range=(0.1, 0.2), p=1)
    holes = engine(transform).sample(3000, 1, "cpu")[0]["holes"][:, 0]
    heights, widths = holes[:, 3] - holes[:, 1], holes[:, 2] - holes[:, 0]
    assert heights.min() == 8 and heights.max() == 15  # int(32 * U(0.25, 0.5))
    assert widths.min() == 3 and widths.max() == 6


def test_jitter_factors_and_orders_follow_the_ranges():
    transform = A.ColorJitter(brightness=0.2, contrast=(0.5, 0.9), saturation=0.4, hue=0, p=0.4)
    params = engine(transform).sample(20000, 2, "cpu")[0]
    for factors, (low, high) in zip(params["factors"], [(0.8, 1.2), (0.5, 0.9), (0.6, 1.4)]):
        assert low <= factors.min() and factors.max() <= high
        assert abs(factors.mean().item() - (low + high) / 2) < 0.01
    assert 0.38 < params["on"].float().mean() < 0.42
    orders = {tuple(o) for o in params["order"].tolist()}
    assert len(orders) == 24  # every permutation of the four operations


# --- determinism ----------------------------------------------------------------------------------


def test_same_seed_same_batch_other_step_other_batch():
    compiled = compile_pipeline(build_pipeline("standard"))
    x = torch.from_numpy(images(64))
    first = compiled(x, (0, 3, 7))
    assert torch.equal(first, compiled(x, (0, 3, 7)))
    assert not torch.equal(first, compiled(x, (0, 3, 8)))
    assert not torch.equal(first, compiled(x, (1, 3, 7)))
    assert not torch.equal(first, compiled(x, (0, 4, 7)))


def test_standard_preset_compiles_and_keeps_shape_and_dtype():
    compiled = compile_pipeline(build_pipeline("standard"))
    assert compiled.describe() == "Pad + RandomCrop + HorizontalFlip"
    assert compiled.horizontal_flip_p == 0.5
    out = compiled(torch.from_numpy(images(5)), 0)
    assert out.dtype == torch.uint8 and out.shape == (5, 32, 32, 3)
    assert isinstance(compile_pipeline(None), BatchAugment)


def test_translation_moves_pixels_without_changing_them():
    compiled = engine(A.Pad(padding=4, border_mode=CONSTANT, fill=0), A.RandomCrop(32, 32))
    x = torch.from_numpy(images(200) | 1)  # no zero pixels: the fill is recognisable
    out = compiled(x, 5)
    params = compiled.sample(200, 5, "cpu")[0]
    for i in range(0, 200, 23):
        dy, dx = int(params["y"][i]) - 4, int(params["x"][i]) - 4  # the crop's shift from centre
        window = out[i][max(0, -dy) : 32 - max(0, dy), max(0, -dx) : 32 - max(0, dx)]
        source = x[i][max(0, dy) : 32 - max(0, -dy), max(0, dx) : 32 - max(0, -dx)]
        assert torch.equal(window, source)
        assert (out[i] == 0).all(dim=2).sum() == 32 * 32 - window.shape[0] * window.shape[1]


def test_flip_override_replaces_the_drawn_flips():
    compiled = compile_pipeline(A.Compose([A.HorizontalFlip(p=0.5)]))
    x = torch.from_numpy(images(6))
    flip = torch.tensor([True, False, True, True, False, False])
    out = compiled(x, 0, flip=flip)
    assert torch.equal(out[flip], x[flip].flip(2)) and torch.equal(out[~flip], x[~flip])


# --- fallback -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pipeline, reason",
    [
        (A.Compose([A.Pad(4), A.RandomCrop(32, 32), A.Affine(rotate=10)]), "Affine has no batched equivalent"),
        (A.Compose([A.Rotate(limit=15)]), "Rotate has no batched equivalent"),
        (A.Compose([A.ColorJitter(hue=0.1)]), "ColorJitter with hue=(-0.1, 0.1) has no batched equivalent"),
        (A.Compose([A.OneOf([A.HorizontalFlip()])]), "OneOf (a nested composition) has no batched equivalent"),
        (A.Compose([A.CoarseDropout(fill="inpaint_ns")]), "CoarseDropout with fill='inpaint_ns' has no batched"),
        (A.Compose([A.Pad(4, p=0.5)]), "Pad with p=0.5 and no RandomCrop after it"),
    ],
)
def test_unsupported_transform_gives_one_line_reason(pipeline, reason):
    result = compile_pipeline(pipeline)
    assert isinstance(result, str) and result.startswith(reason) and "\n" not in result


def test_strong_preset_falls_back_naming_affine():
    assert compile_pipeline(build_pipeline("strong")) == "Affine has no batched equivalent"


def test_wrong_input_is_refused():
    compiled = compile_pipeline(build_pipeline("standard"))
    with pytest.raises(ValueError, match="uint8"):
        compiled(torch.zeros(2, 32, 32, 3), 0)
    with pytest.raises(ValueError):
        compiled(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), 0)
    assert isinstance(PadCrop().output_size((32, 32)), tuple)


def test_fused_geometry_equals_the_steps_one_by_one():
    compiled = engine(
        A.Pad(padding=(1, 2, 3, 0), border_mode=REFLECT_101),
        A.Pad(padding=3, border_mode=CONSTANT, fill=7),
        A.RandomCrop(30, 34),
        A.HorizontalFlip(p=0.5),
        A.Pad(padding=2, border_mode=CONSTANT, fill=9),
        A.VerticalFlip(p=0.5),
        A.RandomCrop(32, 32),
    )
    x = torch.from_numpy(images(40))
    params = compiled.sample(len(x), (4, 5), "cpu")
    one_by_one = x
    for step, p in zip(compiled.steps, params):
        one_by_one = step.apply(one_by_one, p)
    assert torch.equal(compiled.apply(x, params), one_by_one)
    assert torch.equal(compiled(x, (4, 5)), one_by_one)
