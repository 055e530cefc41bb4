"""Patch-embedding grids for whole images: scale to the model's GSD, slide windows, cache.

Geometry (all in *model pixels*, i.e. after resampling to ``model_gsd_m``):

* An image whose GSD is within ``gsd_tolerance`` of ``model_gsd_m`` (or that has no GSD)
  is used at its native size; otherwise it is resampled (antialiased bilinear) so one
  pixel covers ``model_gsd_m`` metres, the scale the image tower was trained at.
* The model image is padded at the bottom/right to a multiple of the patch size and to
  at least one window, by mirroring its own pixels (a neutral grey border would be a
  strong, fake "uniform surface" context for every patch). Padding is preferred to
  scaling small images up, which would show objects several times larger than the
  model ever saw them and defeat the GSD matching.
* Windows of ``window_px`` are placed every ``window_stride_px`` (a multiple of the patch
  size, so all windows share one patch lattice), the last one flush with the padded edge.
  Each patch's feature is the mean of its features over the windows that contain it,
  re-normalised to unit length.
* Patches wholly in the padding are dropped; ``PatchGrid.valid`` gives each remaining
  patch's fraction of valid (inside the image, not nodata) pixels. Nodata pixels are
  filled with the normalisation mean (a zero input) before embedding.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from viper_rs.core.config import Settings
from viper_rs.core.errors import ConfigError, ImageError
from viper_rs.core.geo import GeoImage
from viper_rs.tiling.chips import starts
from viper_rs.vision.cache import FeatureCache, cache_key
from viper_rs.vision.modeling.clip_dense import CLIP_MEAN, CLIP_STD

log = logging.getLogger(__name__)

CACHE_KIND = "patch-grid"
#: A model image larger than this (after resampling) is refused rather than thrashing memory.
MAX_MODEL_PIXELS = 150_000_000
#: Show a progress bar from this many windows on.
PROGRESS_MIN_WINDOWS = 16


@dataclass
class PatchGrid:
    """Unit patch embeddings of one image and the mapping back to its pixels.

    ``features`` is (rows, cols, D) float32; patch (i, j) covers model pixels
    ``[i*p, (i+1)*p) x [j*p, (j+1)*p)`` with ``p`` the model's patch size, i.e. image
    pixels ``[i*patch_px, (i+1)*patch_px)`` (likewise for columns); ``scale`` is model
    pixels per image pixel. ``valid`` (rows, cols) is each patch's fraction of valid image
    pixels (1 inside the image, less at the image edge or over nodata).
    """

    features: np.ndarray
    image_shape: tuple[int, int]
    patch_px: float
    scale: float
    windows: int
    model_id: str
    model_shape: tuple[int, int] | None = None
    valid: np.ndarray | None = field(default=None, repr=False)

    @property
    def rows(self) -> int:
        """Patch rows."""
        return int(self.features.shape[0])

    @property
    def cols(self) -> int:
        """Patch columns."""
        return int(self.features.shape[1])

    def _axis_scale(self) -> tuple[float, float]:
        """Model pixels per image pixel along rows and columns (exact after rounding)."""
        h, w = self.image_shape
        mh, mw = self.model_shape or (h * self.scale, w * self.scale)
        return mh / h, mw / w

    def upsample(self, grid2d: np.ndarray) -> np.ndarray:
        """Bilinearly interpolate a (rows, cols) patch map to an (H, W) float32 image map.

        Values sit at patch centres; pixels beyond the outermost centres take the edge
        value.
        """
        g = np.asarray(grid2d, dtype=np.float32)
        if g.shape != (self.rows, self.cols):
            raise ValueError(f"grid shape {g.shape} != patch grid {(self.rows, self.cols)}")
        h, w = self.image_shape
        sy, sx = self._axis_scale()
        p = self.patch_px * self.scale  # model pixels per patch

        def axis(n: int, s: float, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            u = (np.arange(n, dtype=np.float64) + 0.5) * s / p - 0.5
            u = np.clip(u, 0.0, count - 1)
            i0 = np.floor(u).astype(np.intp)
            i1 = np.minimum(i0 + 1, count - 1)
            return i0, i1, (u - i0).astype(np.float32)

        r0, r1, wr = axis(h, sy, self.rows)
        c0, c1, wc = axis(w, sx, self.cols)
        rows = g[r0] * (1 - wr)[:, None] + g[r1] * wr[:, None]  # (H, cols)
        return (rows[:, c0] * (1 - wc) + rows[:, c1] * wc).astype(np.float32)

    def patch_centres(self) -> np.ndarray:
        """(rows, cols, 2) centres as (row, col) in image pixel indices (pixel k centred on k).

        For a patch cut by the image edge, the centre of its part inside the image.
        """
        h, w = self.image_shape
        sy, sx = self._axis_scale()
        p = self.patch_px * self.scale

        def axis(count: int, s: float, n: int) -> np.ndarray:
            lo = np.arange(count, dtype=np.float64) * p
            hi = np.minimum(lo + p, n * s)
            return (lo + hi) / 2 / s - 0.5

        r = axis(self.rows, sy, h)
        c = axis(self.cols, sx, w)
        return np.stack(np.meshgrid(r, c, indexing="ij"), axis=-1)


class Embedder:
    """Turns a GeoImage into a :class:`PatchGrid` with any ``encode``-style image tower.

    The encoder needs ``encode(batch (B,3,S,S)) -> (B,S/p,S/p,D)``, and the attributes
    ``model_id``, ``window`` (S), ``patch`` (p) and ``device``; ``mean``/``std`` (the
    input normalisation) default to CLIP's.
    """

    def __init__(self, encoder: Any, settings: Settings | None = None,
                 cache: FeatureCache | None = None) -> None:
        self.encoder = encoder
        self.settings = settings or Settings()
        self.cache = cache
        s = self.settings
        self.patch = int(encoder.patch)
        self.window = int(s.window_px)
        self.stride = int(s.window_stride_px)
        if self.window != int(encoder.window):
            raise ConfigError(
                f"window_px={self.window} but {encoder.model_id} takes "
                f"{encoder.window}x{encoder.window} windows"
            )
        if self.stride <= 0 or self.stride > self.window or self.stride % self.patch:
            raise ConfigError(
                f"window_stride_px={self.stride} must be a positive multiple of the "
                f"{self.patch}-px patch, at most window_px={self.window}"
            )
        if not (s.model_gsd_m > 0 and s.gsd_tolerance >= 1):
            raise ConfigError("model_gsd_m must be > 0 and gsd_tolerance >= 1")
        self.mean = tuple(getattr(encoder, "mean", CLIP_MEAN))
        self.std = tuple(getattr(encoder, "std", CLIP_STD))
        self.last_stats: dict[str, Any] = {}

    # ------------------------------------------------------------------ scale
    def model_scale(self, image: GeoImage) -> float:
        """Model pixels per image pixel: 1, or GSD / model GSD when outside the tolerance."""
        gsd = image.ground_sampling_distance
        if gsd is None or not math.isfinite(gsd) or gsd <= 0:
            return 1.0
        ratio = gsd / self.settings.model_gsd_m
        tol = self.settings.gsd_tolerance
        return 1.0 if 1.0 / tol <= ratio <= tol else ratio

    def key(self, image: GeoImage) -> str:
        """Cache key: image content, model and every windowing parameter."""
        s = self.settings
        return cache_key(image.content_hash, self.encoder.model_id, self.window, self.stride,
                         s.model_gsd_m, s.gsd_tolerance, self.mean, self.std)

    # ------------------------------------------------------------------ main
    def embed(self, image: GeoImage) -> PatchGrid:
        """The image's patch grid (computed once per image and model, then cached)."""
        t0 = time.perf_counter()
        key = self.key(image)
        if self.cache is not None:
            hit = self.cache.get(CACHE_KIND, key)
            if hit is not None:
                grid = self._from_arrays(hit)
                self.last_stats = {
                    "ms": (time.perf_counter() - t0) * 1000, "windows": grid.windows,
                    "cached": True, "resampled": grid.scale != 1.0,
                }
                return grid
        grid = self._compute(image)
        if self.cache is not None:
            self.cache.put(CACHE_KIND, key, self._to_arrays(grid))
        self.last_stats = {
            "ms": (time.perf_counter() - t0) * 1000, "windows": grid.windows,
            "cached": False, "resampled": grid.scale != 1.0,
        }
        return grid

    def _prepare(self, image: GeoImage, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (3, Hm, Wm) model image and its (Hm, Wm) validity fraction."""
        try:
            rgb = np.stack([image.band(r) for r in ("R", "G", "B")], axis=0)
        except ImageError as exc:
            raise ImageError(f"{exc}; the image tower needs R, G and B bands") from None
        rgb = np.clip(rgb, 0.0, 1.0, out=rgb)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        valid = image.valid.astype(np.float32)
        if not image.valid.all():
            rgb = np.where(image.valid[None], rgb, mean)
        x = torch.from_numpy(np.ascontiguousarray((rgb - mean) / std, dtype=np.float32))
        v = torch.from_numpy(valid)
        if scale != 1.0:
            h, w = image.shape
            mh, mw = max(1, round(h * scale)), max(1, round(w * scale))
            if mh * mw > MAX_MODEL_PIXELS:
                raise ImageError(
                    f"{image.name}: resampling to {self.settings.model_gsd_m} m/px gives "
                    f"{mw}x{mh} px, too large; crop the image or raise model_gsd_m"
                )
            x = F.interpolate(x[None], size=(mh, mw), mode="bilinear", align_corners=False,
                              antialias=scale < 1)[0]
            v = F.interpolate(v[None, None], size=(mh, mw), mode="bilinear",
                              align_corners=False, antialias=scale < 1)[0, 0].clamp(0, 1)
        return x, v

    def _compute(self, image: GeoImage) -> PatchGrid:
        scale = self.model_scale(image)
        x, valid = self._prepare(image, scale)
        _, mh, mw = x.shape
        p, win = self.patch, self.window
        ph = max(win, -(-mh // p) * p)
        pw = max(win, -(-mw // p) * p)
        x = _mirror_pad(x, ph, pw)
        vpad = torch.zeros((ph, pw), dtype=torch.float32)
        vpad[:mh, :mw] = valid
        ys = starts(ph, win, self.stride)
        xs = starts(pw, win, self.stride)
        origins = [(y, xx) for y in ys for xx in xs]
        g = win // p
        enc = self.encoder
        device = enc.device
        acc: torch.Tensor | None = None
        count = torch.zeros((ph // p, pw // p, 1), dtype=torch.float32)
        bs = max(1, int(self.settings.batch_size))
        batches = [origins[i:i + bs] for i in range(0, len(origins), bs)]
        bar = _progress(len(origins), image.name)
        try:
            with torch.inference_mode():
                for batch in batches:
                    crops = torch.stack([x[:, y:y + win, c:c + win] for y, c in batch])
                    feats = enc.encode(crops.to(device)).float().cpu()
                    if acc is None:
                        acc = torch.zeros((ph // p, pw // p, feats.shape[-1]), dtype=torch.float32)
                    for (y, c), f in zip(batch, feats, strict=True):
                        acc[y // p:y // p + g, c // p:c // p + g] += f
                        count[y // p:y // p + g, c // p:c // p + g] += 1
                    if bar is not None:
                        bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
        assert acc is not None
        rows, cols = -(-mh // p), -(-mw // p)
        feats = F.normalize(acc[:rows, :cols] / count[:rows, :cols], dim=-1)
        cover = F.avg_pool2d(vpad[None, None], p)[0, 0, :rows, :cols]
        return PatchGrid(
            features=feats.numpy().astype(np.float32, copy=False),
            image_shape=image.shape,
            patch_px=p / scale,
            scale=scale,
            windows=len(origins),
            model_id=enc.model_id,
            model_shape=(mh, mw),
            valid=cover.numpy().astype(np.float32, copy=False),
        )

    # ------------------------------------------------------------------ cache form
    @staticmethod
    def _to_arrays(grid: PatchGrid) -> dict[str, np.ndarray]:
        mh, mw = grid.model_shape or grid.image_shape
        return {
            "features": grid.features,
            "valid": grid.valid if grid.valid is not None else np.ones(grid.features.shape[:2],
                                                                       np.float32),
            "meta": np.array([grid.image_shape[0], grid.image_shape[1], mh, mw, grid.patch_px,
                              grid.scale, grid.windows], dtype=np.float64),
        }

    def _from_arrays(self, arrays: dict[str, np.ndarray]) -> PatchGrid:
        h, w, mh, mw, patch_px, scale, windows = arrays["meta"].tolist()
        return PatchGrid(
            features=arrays["features"].astype(np.float32, copy=False),
            image_shape=(int(h), int(w)),
            patch_px=float(patch_px),
            scale=float(scale),
            windows=int(windows),
            model_id=self.encoder.model_id,
            model_shape=(int(mh), int(mw)),
            valid=arrays["valid"].astype(np.float32, copy=False),
        )


def _mirror_index(n: int, size: int) -> torch.Tensor:
    """Indices 0..size-1 into an axis of length n, mirrored (edge pixel repeated) past n."""
    i = torch.arange(size) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


def _mirror_pad(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad (C, h, w) at the bottom/right to (C, height, width) by mirroring."""
    _, h, w = x.shape
    if h < height:
        x = x.index_select(1, _mirror_index(h, height))
    if w < width:
        x = x.index_select(2, _mirror_index(w, width))
    return x


def _progress(total: int, name: str) -> Any:
    if total < PROGRESS_MIN_WINDOWS:
        return None
    from tqdm.auto import tqdm

    from viper_rs.core.textsafe import safe_text

    return tqdm(total=total, desc=f"embedding {safe_text(name, 80)}", unit="window", leave=False)


def band_problem(image: GeoImage) -> str | None:
    """Why an image tower (GRAFT, CLIP) cannot read ``image``, None when it can: it needs
    R, G and B bands, or one grey band (repeated)."""
    if all(image.has(b) for b in ("R", "G", "B")) or image.has("GRAY"):
        return None
    return (f"{image.name}: the image tower needs R, G and B bands or one grey band (image "
            f"bands: {','.join(image.band_names)}; set them with --bands)")
