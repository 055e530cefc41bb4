"""Band roles (R, G, B, NIR, GRAY, ALPHA): parsing ``--bands``, reading them from a file's
metadata, expanding a palette, folding an alpha band into the validity mask."""

from __future__ import annotations

from typing import Any

import numpy as np

from viper_rs.core.errors import ImageError
from viper_rs.core.raster_read import Raster

#: Band roles the library understands.
BAND_ROLES = ("R", "G", "B", "NIR")
_ROLE_ALIASES = {
    "r": "R", "red": "R", "g": "G", "green": "G", "b": "B", "blue": "B",
    "nir": "NIR", "n": "NIR", "near infrared": "NIR", "near-infrared": "NIR",
    "nearinfrared": "NIR", "infrared": "NIR", "ir": "NIR",
    "gray": "GRAY", "grey": "GRAY", "l": "GRAY", "pan": "GRAY", "panchromatic": "GRAY",
    "alpha": "ALPHA", "a": "ALPHA",
}


def parse_bands(spec: str | list[str] | None) -> list[str] | None:
    """Parse ``"R,G,B,NIR"`` (or a list) into canonical band role names."""
    if spec is None:
        return None
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for item in items:
        key = item.strip().lower()
        if not key:
            raise ImageError(f"empty band name in --bands {spec!r}")
        out.append(_ROLE_ALIASES.get(key, item.strip().upper()))
    return out


def band_roles(interp: list[str], descriptions: list, tags: dict) -> list[str]:
    """Band roles of a file from its per-band descriptions, else its colour interpretation,
    else R, G, B, NIR in order (``BAND<i>`` past those); ImageError when two bands get one
    role."""
    n = len(interp)
    names: list[str | None] = [None] * n
    for i, d in enumerate(descriptions[:n]):
        if d:
            key = str(d).strip().lower()
            if key in _ROLE_ALIASES:
                names[i] = _ROLE_ALIASES[key]
    ci = {"red": "R", "green": "G", "blue": "B", "alpha": "ALPHA"}
    if n <= 2:
        ci["gray"] = "GRAY"  # a "gray" tag on a multi-band file carries no meaning
    for i, c in enumerate(interp):
        if names[i] is None and c in ci:
            names[i] = ci[c]
    if n == 1 and names[0] is None:
        names[0] = "GRAY"
    defaults = ["R", "G", "B", "NIR"]
    for i in range(n):
        if names[i] is None:
            names[i] = defaults[i] if i < 4 and defaults[i] not in names else f"BAND{i + 1}"
    if len(set(names)) != len(names):
        raise ImageError(f"ambiguous band roles {names}; pass --bands, e.g. --bands R,G,B,NIR")
    return [str(x) for x in names]


def _looks_like_alpha(band: np.ndarray) -> bool:
    """An alpha band holds (almost) only fully transparent and fully opaque values."""
    vals = np.unique(band[:: max(1, band.shape[0] // 256), :: max(1, band.shape[1] // 256)])
    return len(vals) <= 2 and vals.min() in (0, vals.max())


def expand_palette(raster: Raster) -> None:
    """Replace a palette band (paletted PNG, GIF, TIFF) by its R,G,B colours, transparent
    entries made nodata (in place)."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    for k, v in raster.colormap.items():
        if 0 <= k < 256:
            lut[k] = v
    rgba = lut[raster.data[0].clip(0, 255).astype(np.uint8)]
    raster.data = np.moveaxis(rgba[..., :3], -1, 0)
    raster.mask &= rgba[..., 3] > 0
    raster.interp = ["red", "green", "blue"]
    raster.descriptions = [None, None, None]


def image_bands(
    p: Any, raster: Raster, bands: str | list[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(pixels, validity mask, band roles): roles from ``bands`` or the file's metadata,
    an alpha band folded into the mask, non-numeric pixels as float32."""
    data, mask = raster.data, raster.mask
    if bands is not None:
        names = parse_bands(bands)
    else:
        names = band_roles(raster.interp, raster.descriptions, raster.tags)
    if bands is None and "ALPHA" in names and not _looks_like_alpha(data[names.index("ALPHA")]):
        # GDAL tags the 4th band of 4-band 8-bit TIFFs as alpha; NAIP's is NIR.
        names[names.index("ALPHA")] = "NIR" if "NIR" not in names else "BAND4"
    if len(names) != data.shape[0]:
        raise ImageError(
            f"{p}: --bands names {len(names)} bands ({','.join(names)}) "
            f"but the file has {data.shape[0]}"
        )
    if "ALPHA" in names:
        i = names.index("ALPHA")
        mask &= data[i] > 0
        data = np.delete(data, i, axis=0)
        names = [n for n in names if n != "ALPHA"]
        if not names:
            raise ImageError(f"{p}: only an alpha band, no image bands")
    if data.dtype == np.bool_ or data.dtype.kind not in "uif":
        data = data.astype(np.float32)
    return data, mask, names
