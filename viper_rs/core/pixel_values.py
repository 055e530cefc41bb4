"""What pixel values say: which pixels are finite numbers, and an image's white point (the
value that maps to 1.0)."""

from __future__ import annotations

import numpy as np


def _valid_values(data: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Every band's values at the ``valid`` pixels (all pixels when none or all are valid)
    in one new 1-D array of the data's dtype."""
    if valid is None or not valid.any() or valid.all():
        return data.flatten()
    m = valid.ravel()
    n = int(m.sum())
    out = np.empty(n * data.shape[0], dtype=data.dtype)
    for i, band in enumerate(data):
        out[i * n : (i + 1) * n] = band.ravel()[m]
    return out


def _percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation) of a 1-D array, partitioning
    ``values`` in place (numpy's makes a copy)."""
    pos = q / 100.0 * (values.size - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, values.size - 1)
    values.partition([lo, hi] if hi != lo else lo)
    return float(np.percentile(values[[lo, hi]], 100.0 * (pos - lo)))


def finite_pixels(data: np.ndarray) -> np.ndarray | None:
    """(H, W) True where every band is a finite number; None for integer data (always)."""
    if data.dtype.kind not in "fc":
        return None
    finite = np.isfinite(data[0])
    for band in data[1:]:
        finite &= np.isfinite(band)
    return finite


def nominal_white_point(data: np.ndarray, valid: np.ndarray) -> float:
    """Value that maps to 1.0: the nominal maximum of the data's bit depth."""
    if data.dtype == np.uint8:
        return 255.0
    vals = _valid_values(data, valid)
    hi = _percentile(vals, 99.9) if vals.size else 1.0
    if data.dtype.kind == "f" and hi <= 1.0 + 1e-6:
        return 1.0
    for bits in (8, 10, 11, 12, 14, 16):
        if hi <= 2**bits - 1:
            return float(2**bits - 1)
    return max(hi, 1.0)
