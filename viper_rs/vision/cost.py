"""What a question about one image will cost, known from the file's header before any pixel
is decoded, and the budget that refuses the images that cost too much (issue 23).

:func:`estimate_image` turns a :class:`~viper_rs.geo.RasterHeader` (pixels, bands, bytes
per sample, format, pixel size: what GDAL reads from the header alone) into the peak
memory and the time of one question about the image: the process with the detector
loaded, the decoder's working memory, the pixels as read, and the pipeline's measured
bytes and seconds per pixel (the image's arrays, the detector's maps; BuildingNet's at its
own scale). :func:`check_image` raises :class:`~viper_rs.errors.ImageTooLarge` when that is
over the :class:`ImageBudget` (``image_max_memory_mb``, ``image_max_time_s``), with the
estimate, the budget and the ways out. :func:`image_admission` is the check
:func:`viper_rs.geo.admission` runs inside every :meth:`GeoImage.open`, between reading
the header and decoding the first pixel.

Example::

    with admission(image_admission(settings)):
        image = GeoImage.open("big.png", gsd=0.3)  # ImageTooLarge before decoding
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from viper_rs.config import Settings
from viper_rs.errors import ImageTooLarge
from viper_rs.geo import RasterHeader, ways_out
from viper_rs.overrides import setting_hint

# ----------------------------------------------------------------------------- constants
# Measured with ``python -m eval.bench_image_memory`` (README, "Image memory benchmark"):
# ``python -m viper_rs ask`` in a fresh process under /usr/bin/time -v on uint8 RGB
# GeoTIFFs and PNGs of 2, 8 and 16 Mpx (synthetic scenes tiled), a building count and a
# water area question, detector auto (BuildingNet for buildings, spectral for the rest).

#: Peak resident memory of the process before the image counts: interpreter, numpy,
#: rasterio, torch and BuildingNet's weights, the sandbox's workers' share (bytes).
BASE_BYTES = 700e6
#: Bytes per pixel of the image as read, over the bytes of its samples: the GeoImage's
#: validity mask, the spectral detector's float32 maps (bands, indices, smoothed maps,
#: class maps) at their peak, the regions' masks.
PIPELINE_BYTES_PER_PX = 100.0
#: Bytes per pixel at BuildingNet's scale (its input, features, scores, instance labels).
BUILDING_BYTES_PER_PX = 60.0
#: Seconds per million pixels as read (decode, spectral maps, components), and per
#: million pixels at BuildingNet's scale.
S_PER_MPX = 2.0
BUILDING_S_PER_MPX = 2.0
#: Seconds before the first pixel (imports, weights, sandbox start).
BASE_S = 5.0
#: The decoder's own working memory, per pixel and band of the source pixels a read
#: covers: a progressive JPEG keeps every DCT coefficient (2 bytes per sample) until the
#: last scan; an interlaced PNG is held whole (one sample) before GDAL copies it out.
#: Charged for every file of the format (the header does not say whether it is
#: progressive or interlaced).
DECODER_BYTES_PER_SAMPLE: dict[str, float] = {"JPEG": 2.0, "PNG": 1.0}
#: BuildingNet's scale (m/px), the input resolutions it accepts and the most pixels it runs
#: on in one piece (the shipped model's config; ``auto`` answers buildings with the
#: spectral rules outside them).
BUILDING_GSD_M = 0.3
BUILDING_GSD_RANGE_M = (0.1, 1.2)
BUILDING_MAX_PIXELS = 40_000_000


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ImageBudget:
    """The most one question about one image may cost: peak memory (bytes) and time (s)."""

    memory_bytes: int
    seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageBudget:
        """``image_max_memory_mb`` and ``image_max_time_s`` of ``settings``."""
        return cls(memory_bytes=int(settings.image_max_memory_mb) * 1_000_000,
                   seconds=float(settings.image_max_time_s))


@dataclass(frozen=True)
class ImageCost:
    """The estimate of one question about one image (nothing decoded yet): ``pixels`` as
    read, ``model_pixels`` at BuildingNet's scale (0 when it does not run),
    ``memory_bytes`` peak resident memory of the process, ``seconds`` wall time on an
    otherwise idle 2-core machine."""

    pixels: int
    model_pixels: int
    memory_bytes: int
    seconds: float

    def describe(self) -> str:
        """``"about 9.8 GB and 4 min"``."""
        return f"about {_bytes(self.memory_bytes)} and {_duration(self.seconds)}"


def estimate_image(header: RasterHeader, settings: Settings,
                   gsd: float | None = None) -> ImageCost:
    """The cost of a question about the read ``header`` describes with ``settings``'
    detector (``gsd``: the ground size the caller gives an image without a CRS)."""
    px = header.pixels
    samples = px * header.bands * header.itemsize
    source_px = header.source_width * header.source_height
    decoder = DECODER_BYTES_PER_SAMPLE.get(header.driver, 0.0) * source_px * header.bands
    model_px = _building_pixels(header, settings, gsd)
    memory = (BASE_BYTES + decoder + samples + px * PIPELINE_BYTES_PER_PX
              + model_px * BUILDING_BYTES_PER_PX)
    seconds = (BASE_S + S_PER_MPX * max(px, source_px) / 1e6
               + BUILDING_S_PER_MPX * model_px / 1e6)
    return ImageCost(pixels=px, model_pixels=model_px, memory_bytes=int(memory),
                     seconds=float(seconds))


def _building_pixels(header: RasterHeader, settings: Settings, gsd: float | None) -> int:
    """Pixels BuildingNet would run on (0 when ``auto`` would not use it)."""
    if settings.detector != "auto" or not settings.building_model or header.bands < 3:
        return 0
    g = header.ground_pixel_m or (gsd if header.crs is None else None)
    lo, hi = BUILDING_GSD_RANGE_M
    if g is None or not lo <= g <= hi:
        return 0
    n = int(header.pixels * (g / BUILDING_GSD_M) ** 2)
    return n if n <= BUILDING_MAX_PIXELS else 0


def check_image(header: RasterHeader, cost: ImageCost, budget: ImageBudget) -> None:
    """Raise :class:`~viper_rs.errors.ImageTooLarge` when ``cost`` is over ``budget``, with
    the estimate, the budget and the ways out."""
    over = []
    if cost.memory_bytes > budget.memory_bytes:
        over.append(f"{_bytes(cost.memory_bytes)} of memory, over the "
                    f"{_bytes(budget.memory_bytes)} budget ({setting_hint('image_max_memory_mb', 'MB')})")
    if cost.seconds > budget.seconds:
        over.append(f"{_duration(cost.seconds)}, over the {_duration(budget.seconds)} budget "
                    f"({setting_hint('image_max_time_s', 'S')})")
    if not over:
        return
    fit = _fitting_side(header, cost, budget)
    crop = (f"crop it to at most about {fit:,} x {fit:,} px" if fit else "crop it")
    raise ImageTooLarge(
        f"{header.path}: {header.width:,} x {header.height:,} px x {header.bands} band(s) would "
        f"take about {' and '.join(over)}; {ways_out(header.crs is not None, crop)}"
    )


def _fitting_side(header: RasterHeader, cost: ImageCost, budget: ImageBudget) -> int:
    """Side (px) of a square crop that would fit the budget (0 when none would)."""
    per_px_bytes = (cost.memory_bytes - BASE_BYTES) / max(cost.pixels, 1)
    per_px_s = (cost.seconds - BASE_S) / max(cost.pixels, 1)
    room = min((budget.memory_bytes - BASE_BYTES) / max(per_px_bytes, 1e-9),
               (budget.seconds - BASE_S) / max(per_px_s, 1e-12))
    return int(math.sqrt(room)) // 100 * 100 if room > 10_000 else 0


def image_admission(settings: Settings, gsd: float | None = None
                    ) -> Callable[[RasterHeader], None]:
    """The :func:`viper_rs.geo.admission` check of ``settings``' image budget."""
    budget = ImageBudget.from_settings(settings)

    def check(header: RasterHeader) -> None:
        check_image(header, estimate_image(header, settings, gsd), budget)

    return check


def _bytes(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
