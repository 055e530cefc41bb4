"""Pixel-grid helpers of the spectral rules: metres to pixels, local statistics, mask
cleaning, block means and their upsampling."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

_EPS = 1e-6


def _px(metres: float, gsd: float, minimum: float = 1.0) -> float:
    """A length in metres as (fractional) pixels, at least ``minimum``."""
    return max(minimum, metres / gsd)


def _odd(n: float) -> int:
    """``n`` rounded to an odd window size of at least 1."""
    k = max(1, int(round(n)))
    return k if k % 2 else k + 1


def _min_pixels(area_m2: float, gsd: float) -> int:
    """An area in square metres as a whole number of pixels, at least 1."""
    return max(1, int(round(area_m2 / (gsd * gsd))))


def _local_stats(x: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Local mean and standard deviation over a ``size`` x ``size`` window."""
    m = ndi.uniform_filter(x, size, mode="reflect")
    m2 = ndi.uniform_filter(x * x, size, mode="reflect")
    return m, np.sqrt(np.maximum(m2 - m * m, 0.0))


def _smooth(x: np.ndarray, size: int) -> np.ndarray:
    """Near-Gaussian smoothing in O(pixels): two passes of a ``size`` box filter."""
    return ndi.uniform_filter(ndi.uniform_filter(x, size, mode="nearest"), size, mode="nearest")


def _drop_small(mask: np.ndarray, min_px: int) -> np.ndarray:
    """``mask`` without its 4-connected components smaller than ``min_px`` pixels."""
    labels, n = ndi.label(mask)
    if n == 0:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


def _clean(mask: np.ndarray, min_px: int, hole_px: int = 0) -> np.ndarray:
    """Drop components smaller than ``min_px`` and fill holes smaller than ``hole_px``."""
    if min_px > 1:
        mask = _drop_small(mask, min_px)
    if hole_px > 1:
        mask = ~_drop_small(~mask, hole_px)
    return mask


def _soft(x: np.ndarray, threshold: float, scale: float) -> np.ndarray:
    """Logistic evidence in 0..1, 0.5 at ``threshold``."""
    return (1.0 / (1.0 + np.exp(-(x - threshold) / scale))).astype(np.float32)


def _fill_nodata(x: np.ndarray, valid: np.ndarray, fill: float | None = None) -> np.ndarray:
    """Replace nodata by ``fill`` (default: the valid median) so windows at the frame edge
    are not skewed."""
    if valid.all():
        return x
    out = x.copy()
    if fill is None:
        fill = np.median(x[valid]) if valid.any() else 0.0
    out[~valid] = fill
    return out


def _block_reduce_mean(x: np.ndarray, f: int) -> np.ndarray:
    """Mean over ``f`` x ``f`` blocks (partial edge blocks padded by edge replication)."""
    if f == 1:
        return x.astype(np.float32)
    h, w = x.shape
    pad = np.pad(x.astype(np.float32), ((0, (-h) % f), (0, (-w) % f)), mode="edge")
    return pad.reshape(pad.shape[0] // f, f, pad.shape[1] // f, f).mean(axis=(1, 3))


def _upsample(x: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling by ``f`` cropped to ``shape``."""
    if f == 1:
        return x
    return np.repeat(np.repeat(x, f, axis=0), f, axis=1)[: shape[0], : shape[1]]

