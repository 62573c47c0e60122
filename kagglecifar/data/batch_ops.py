"""The batched operations behind batch_augment: per-sample random draws from a seeded torch.Generator,
geometry (pad, crop, flip) fused into one gather, CoarseDropout holes, and ColorJitter's colour ops with
albumentations' uint8 arithmetic."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

# OpenCV border modes (cv2.BORDER_*), named here so that importing this module needs no cv2.
CONSTANT, REPLICATE, REFLECT, WRAP, REFLECT_101 = 0, 1, 2, 3, 4
BORDER_NAMES = {
    CONSTANT: "constant",
    REPLICATE: "replicate",
    REFLECT: "reflect",
    WRAP: "wrap",
    REFLECT_101: "reflect_101",
}
# cv2.cvtColor(RGB2GRAY) on uint8 in OpenCV 5 (the one albumentations installs here): Y = (9798 R + 19235 G
# + 3735 B + 2^14) >> 15, that is 0.299, 0.587, 0.114 in Q15 (tested against cv2 bit for bit).
GRAY_WEIGHTS, GRAY_SHIFT = (9798, 19235, 3735), 15


def seed_generator(seed: tuple[int, ...] | int, device) -> torch.Generator:
    """A generator on `device` seeded from a tuple such as (seed, epoch, step), mixed by numpy's SeedSequence."""
    entropy = [int(s) for s in (seed if isinstance(seed, (tuple, list)) else (seed,))]
    low, high = (int(v) for v in np.random.SeedSequence(entropy).generate_state(2, np.uint32))
    return torch.Generator(device=device).manual_seed((high << 32 | low) & ((1 << 63) - 1))


# Draws are float32 (MPS has no float64, GPUs are slow at it): a uniform in [0, 1) on a 2^-24 grid.


def uniform(n: int, low: float, high: float, g: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g, device=device, dtype=torch.float32)


def randint(n: int, low, high, g: torch.Generator, device) -> torch.Tensor:
    """Integers in [low, high] inclusive; low and high may be per-sample int64 tensors."""
    span = high - low + 1
    return low + (torch.rand(n, generator=g, device=device, dtype=torch.float32) * span).long().clamp(max=span - 1)


@functools.lru_cache(maxsize=64)
def constant(values: tuple, dtype: torch.dtype, device: str) -> torch.Tensor:
    """A small constant tensor made once per device: a copy to a GPU in every step would wait for the GPU."""
    return torch.tensor(values, dtype=dtype, device=device)


def applied(n: int, p: float, g: torch.Generator, device) -> torch.Tensor:
    """Which samples a transform with probability p applies to (albumentations: random() < p)."""
    return torch.rand(n, generator=g, device=device) < p


# --- geometry -------------------------------------------------------------------------------------


def border_index(positions: np.ndarray, size: int, mode: int) -> np.ndarray:
    """Source index of each position of an axis of `size` pixels extended by `mode`; -1 = constant fill.

    OpenCV's borderInterpolate, so padding wider than the image folds over again as in cv2.copyMakeBorder.
    """
    out = []
    for p in positions.tolist():
        if 0 <= p < size:
            out.append(p)
        elif mode == CONSTANT:
            out.append(-1)
        elif mode == REPLICATE:
            out.append(0 if p < 0 else size - 1)
        elif mode == WRAP:
            out.append(p % size)
        elif size == 1:
            out.append(0)
        else:
            delta = 1 if mode == REFLECT_101 else 0
            while not 0 <= p < size:
                p = -p - 1 + delta if p < 0 else size - 1 - (p - size) - delta
            out.append(p)
    return np.asarray(out, dtype=np.int64)


@functools.lru_cache(maxsize=64)
def border_map(size: int, before: int, after: int, mode: int, device: str) -> torch.Tensor:
    """border_index of an axis padded by `before` and `after`, as a tensor on `device` (made once)."""
    return torch.from_numpy(border_index(np.arange(-before, size + after), size, mode)).to(device)


@dataclass
class Geometry:
    """Where each output pixel comes from: out[b, i, j] = images[b, rows[b, i], cols[b, j]], or `fill` where
    a row or col is -1. Consecutive pads, crops and flips compose into one Geometry, so a run of them costs
    one gather (`gather`), whatever their number."""

    rows: torch.Tensor  # (B, h) int64
    cols: torch.Tensor  # (B, w) int64
    fill: tuple[int, ...] | None = None

    @classmethod
    def identity(cls, n: int, size: tuple[int, ...], device) -> Geometry:
        return cls(
            torch.arange(size[0], device=device).expand(n, -1), torch.arange(size[1], device=device).expand(n, -1)
        )

    @staticmethod
    def follow(previous: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """previous[b, index[b, k]], keeping -1 (fill) wherever index or what it points at is -1."""
        out = torch.gather(previous, 1, index.clamp(min=0))
        return torch.where(index < 0, -1, out)

    def gather(self, images: torch.Tensor) -> torch.Tensor:
        n, height, width, channels = images.shape
        h, w = self.rows.shape[1], self.cols.shape[1]
        # One flat index per output pixel and index_select over pixels: several times faster on a CPU than
        # advanced indexing with three index tensors, and one kernel on a GPU.
        base = torch.arange(n, device=images.device).view(-1, 1, 1) * (height * width)
        flat = base + self.rows.clamp(min=0).unsqueeze(2) * width + self.cols.clamp(min=0).unsqueeze(1)
        out = images.reshape(-1, channels).index_select(0, flat.view(-1)).view(n, h, w, channels)
        if self.fill is not None:
            outside = (self.rows < 0).unsqueeze(2) | (self.cols < 0).unsqueeze(1)
            out = torch.where(outside.unsqueeze(3), constant(self.fill, images.dtype, str(images.device)), out)
        return out


@dataclass
class PadCrop:
    """A Pad (probability pad_p) then a RandomCrop to (crop_h, crop_w): a window of the padded image.

    A Pad alone is a crop of the whole padded image; a RandomCrop alone has no padding.
    """

    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right
    mode: int = CONSTANT
    fill: tuple[int, ...] = (0,)
    pad_p: float = 1.0
    crop: tuple[int, int] | None = None  # None: no RandomCrop after the Pad
    name: str = "Pad"

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        top, bottom, left, right = self.pad
        return self.crop or (size[0] + top + bottom, size[1] + left + right)

    def sample(self, n: int, size: tuple[int, int], g: torch.Generator, device) -> dict:
        top, bottom, left, right = self.pad
        padded = applied(n, self.pad_p, g, device) if self.pad_p < 1 else torch.ones(n, dtype=torch.bool, device=device)
        height = torch.where(padded, size[0] + top + bottom, size[0])
        width = torch.where(padded, size[1] + left + right, size[1])
        h, w = self.output_size(size)
        # RandomCrop: y_min = int((height - crop + 1) * random()), in the padded image when it was padded.
        y0 = (uniform(n, 0, 1, g, device) * (height - h + 1)).long() if self.crop else torch.zeros_like(height)
        x0 = (uniform(n, 0, 1, g, device) * (width - w + 1)).long() if self.crop else torch.zeros_like(width)
        # In padded coordinates, an unpadded sample starts at (top, left).
        return {"y": y0 + torch.where(padded, 0, top), "x": x0 + torch.where(padded, 0, left)}

    def compose(self, geometry: Geometry, params: dict) -> Geometry:
        """The windows at params["y"], params["x"] (padded coordinates) of the padded images."""
        height, width = geometry.rows.shape[1], geometry.cols.shape[1]
        top, bottom, left, right = self.pad
        h, w = self.output_size((height, width))
        device = geometry.rows.device
        row_map = border_map(height, top, bottom, self.mode, str(device))
        col_map = border_map(width, left, right, self.mode, str(device))
        rows = row_map[params["y"].view(-1, 1) + torch.arange(h, device=device)]
        cols = col_map[params["x"].view(-1, 1) + torch.arange(w, device=device)]
        fill = self.fill if self.mode == CONSTANT else geometry.fill
        return Geometry(Geometry.follow(geometry.rows, rows), Geometry.follow(geometry.cols, cols), fill)

    def apply(self, images: torch.Tensor, params: dict) -> torch.Tensor:
        return self.compose(Geometry.identity(len(images), images.shape[1:3], images.device), params).gather(images)


@dataclass
class Flip:
    p: float
    dim: int  # 2: horizontal (width), 1: vertical (height), in NHWC
    name: str = "HorizontalFlip"

    def sample(self, n, size, g, device) -> dict:
        return {"flip": applied(n, self.p, g, device)}

    def compose(self, geometry: Geometry, params: dict) -> Geometry:
        flip = params["flip"].view(-1, 1)
        if self.dim == 2:
            return Geometry(geometry.rows, torch.where(flip, geometry.cols.flip(1), geometry.cols), geometry.fill)
        return Geometry(torch.where(flip, geometry.rows.flip(1), geometry.rows), geometry.cols, geometry.fill)

    def apply(self, images, params):
        return self.compose(Geometry.identity(len(images), images.shape[1:3], images.device), params).gather(images)


# --- CoarseDropout --------------------------------------------------------------------------------


@dataclass
class Dropout:
    num_holes: tuple[int, int]
    hole_height: tuple[float, float]
    hole_width: tuple[float, float]
    fill: tuple[int, ...] | str  # per-channel values, "random" or "random_uniform"
    p: float
    name: str = "CoarseDropout"

    def sample(self, n, size, g, device) -> dict:
        """holes (B, K, 4) as (x_min, y_min, x_max, y_max), K = the most holes; unused holes are empty."""
        height, width = size
        k = self.num_holes[1]
        count = randint(n, self.num_holes[0], self.num_holes[1], g, device)
        if self.hole_height[1] >= 1:  # albumentations decides "pixels or fractions" by the height range alone
            hh = randint(n * k, int(self.hole_height[0]), int(min(self.hole_height[1], height)), g, device)
            hw = randint(n * k, int(self.hole_width[0]), int(min(self.hole_width[1], width)), g, device)
        else:
            hh = (height * uniform(n * k, *self.hole_height, g, device)).long()
            hw = (width * uniform(n * k, *self.hole_width, g, device)).long()
        y0 = randint(n * k, 0, height - hh, g, device)
        x0 = randint(n * k, 0, width - hw, g, device)
        holes = torch.stack([x0, y0, x0 + hw, y0 + hh], dim=1).view(n, k, 4)
        used = (torch.arange(k, device=device) < count.view(-1, 1)) & applied(n, self.p, g, device).view(-1, 1)
        params = {"holes": torch.where(used.unsqueeze(2), holes, 0)}
        if self.fill == "random":
            params["noise"] = torch.randint(
                0, 256, (n, height, width, 3), generator=g, device=device, dtype=torch.uint8
            )
        elif self.fill == "random_uniform":
            params["colors"] = torch.randint(0, 256, (n, k, 3), generator=g, device=device, dtype=torch.uint8)
        return params

    def apply(self, images, params):
        holes = params["holes"]  # (B, K, 4)
        height, width = images.shape[1:3]
        ys = torch.arange(height, device=images.device).view(1, 1, -1)
        xs = torch.arange(width, device=images.device).view(1, 1, -1)
        in_rows = (ys >= holes[..., 1:2]) & (ys < holes[..., 3:4])  # (B, K, H)
        in_cols = (xs >= holes[..., 0:1]) & (xs < holes[..., 2:3])  # (B, K, W)
        inside = in_rows.unsqueeze(3) & in_cols.unsqueeze(2)  # (B, K, H, W)
        if self.fill == "random_uniform":
            # Later holes paint over earlier ones, as albumentations fills them one after another.
            out = images
            for i in range(holes.shape[1]):
                color = params["colors"][:, i].view(-1, 1, 1, images.shape[3])
                out = torch.where(inside[:, i].unsqueeze(3), color, out)
            return out
        fill = params["noise"] if self.fill == "random" else constant(self.fill, images.dtype, str(images.device))
        return torch.where(inside.any(1).unsqueeze(3), fill, images)


# --- ColorJitter ----------------------------------------------------------------------------------


# Exact arithmetic without float64: values on a 2^-FIXED_BITS grid held in int64 (a float32 factor >= 2^-17 is
# an integer there, and 255 * 2 * 2^40 * 2^18 still fits), rounded to float32 once at the end. int64 -> float32
# conversion rounds to nearest even, as a float32 FMA does.
FIXED_BITS = 40


def fixed(values: torch.Tensor) -> torch.Tensor:
    """float32 values as integers on the 2^-FIXED_BITS grid (exact for |v| >= 2^-17 or 0)."""
    return (values.to(torch.float32) * float(2**FIXED_BITS)).to(torch.int64)


def fixed_to_float32(values: torch.Tensor, divisor: int = 1) -> torch.Tensor:
    """float32(values * 2^-FIXED_BITS / divisor), rounded once: the integer quotient with a sticky bit for a
    non-zero remainder, so that a tie is a tie only when it is exact."""
    sign = torch.where(values < 0, -1.0, 1.0)
    magnitude = values.abs()
    quotient, remainder = magnitude // divisor, magnitude % divisor
    with_sticky = (2 * quotient + (remainder != 0).to(torch.int64)).to(torch.float32)
    return with_sticky * sign * (2.0 ** -(FIXED_BITS + 1))


def to_uint8(values: torch.Tensor) -> torch.Tensor:
    """numpy's clip(values, 0, 255).astype(uint8): clip, then truncate toward zero."""
    return values.clamp(0, 255).to(torch.uint8)


def gray(images: torch.Tensor) -> torch.Tensor:
    """cv2.cvtColor(RGB2GRAY) of uint8 NHWC images, bit for bit: (B, H, W) uint8.

    Every partial sum is an integer below 2^24, so float32 arithmetic is exact here.
    """
    total = images.to(torch.float32) @ constant(GRAY_WEIGHTS, torch.float32, str(images.device)) + (
        1 << (GRAY_SHIFT - 1)
    )
    return total.mul_(1 / (1 << GRAY_SHIFT)).floor_().to(torch.uint8)


def brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """albumentations' adjust_brightness_torchvision: a float32 lookup table x * factor, clipped, truncated."""
    return to_uint8(images.to(torch.float32) * factor.to(torch.float32).view(-1, 1, 1, 1))


def contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """adjust_contrast_torchvision: x * factor + mean(gray) * (1 - factor) in float32, clipped, truncated."""
    pixels = images.shape[1] * images.shape[2]
    total = gray(images).to(torch.int64).sum(dim=(1, 2))  # the mean is total / pixels, kept exact
    shift = fixed_to_float32(total * fixed(1 - factor.to(torch.float32)), pixels).view(-1, 1, 1, 1)
    out = to_uint8(images.to(torch.float32) * factor.to(torch.float32).view(-1, 1, 1, 1) + shift)
    # factor 0 is a special case there: the whole image becomes round(mean).
    flat = ((2 * total + pixels) // (2 * pixels)).to(torch.uint8).view(-1, 1, 1, 1).expand_as(images)
    return torch.where((factor == 0).view(-1, 1, 1, 1), flat, out)


def saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """adjust_saturation_torchvision: cv2.addWeighted(x, factor, gray, 1 - factor, 0).

    OpenCV computes fma(x, float(factor), gray * float(1 - factor)) in float32 and rounds half to even; the
    fixed-point sum is exact and rounds once, so this is the same rounding (checked against cv2 bit for bit).
    """
    alpha = fixed(factor.to(torch.float32)).view(-1, 1, 1, 1)
    beta = (1 - factor).to(torch.float32).view(-1, 1, 1, 1)
    grays = fixed(gray(images).unsqueeze(3).to(torch.float32).mul_(beta))
    mixed = fixed_to_float32(images.to(torch.int64) * alpha + grays)
    return mixed.round_().clamp_(0, 255).to(torch.uint8)


JITTER_OPS = (brightness, contrast, saturation)  # albumentations' order; hue (index 3) is the identity here


@dataclass
class Jitter:
    brightness: tuple[float, float]
    contrast: tuple[float, float]
    saturation: tuple[float, float]
    p: float
    name: str = "ColorJitter"

    def sample(self, n, size, g, device) -> dict:
        factors = torch.stack([uniform(n, *r, g, device) for r in (self.brightness, self.contrast, self.saturation)])
        # A random order of the four operations (hue, index 3, is the identity here), per sample.
        order = torch.rand(n, 4, generator=g, device=device).argsort(dim=1)
        return {"factors": factors, "order": order, "on": applied(n, self.p, g, device)}

    def apply(self, images, params):
        out = images
        for position in range(4):
            op_index = params["order"][:, position]
            for i, op in enumerate(JITTER_OPS):
                factor = params["factors"][i]
                chosen = params["on"] & (op_index == i) & (factor != 1)  # factor 1: albumentations returns x
                if out.device.type == "cpu":  # only the chosen samples: a CPU has no work to spare
                    rows = chosen.nonzero().squeeze(1)
                    out = out.index_copy(0, rows, op(out.index_select(0, rows), factor.index_select(0, rows)))
                else:  # everything, then select: no host-device synchronisation
                    out = torch.where(chosen.view(-1, 1, 1, 1), op(out, factor), out)
        return out
