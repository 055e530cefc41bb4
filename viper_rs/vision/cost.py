"""What a question about one image will cost, known from the file's header before any pixel
is decoded, and the budget that refuses the images that cost too much (issue 23).

:func:`estimate_image` turns a :class:`~viper_rs.core.admission.RasterHeader` (pixels, bands, bytes
per sample, format, pixel size: what GDAL reads from the header alone) into the peak
memory and the time of one question about the image: the process with the detector
loaded, the decoder's working memory, the pixels as read, and the pipeline's measured
bytes and seconds per pixel (the image's arrays, the detector's maps; BuildingNet's at its
own scale). :func:`check_image` raises :class:`~viper_rs.core.errors.ImageTooLarge` when that is
over the :class:`~viper_rs.core.cost.Budget` (``image_max_memory_mb``, ``image_max_time_s``), with the
estimate, the budget and the ways out. :func:`image_admission` is the check
:func:`viper_rs.core.admission.admission` runs inside every :meth:`GeoImage.open`, between reading
the header and decoding the first pixel.

Example::

    with admission(image_admission(settings)):
        image = GeoImage.open("big.png", gsd=0.3)  # ImageTooLarge before decoding
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from viper_rs.core.admission import RasterHeader, ways_out
from viper_rs.core.config import Settings
from viper_rs.core.cost import Budget
from viper_rs.core.errors import ImageTooLarge
from viper_rs.core.overrides import setting_hint
from viper_rs.core.units import bytes_text, duration_text

# ----------------------------------------------------------------------------- constants
# Measured with ``python -m eval.bench_image_memory`` (docs/benchmarks.md, "Image memory benchmark"):
# ``python -m viper_rs ask`` in a fresh process under /usr/bin/time -v on uint8 RGB
# GeoTIFFs of 0.25 to 16 Mpx at 0.3 m (synthetic scenes tiled), a building count (auto:
# BuildingNet, at its own 0.3 m scale here) and a water area (auto: the spectral rules)
# question. Peak RSS grew by 83 bytes per pixel for the area question and 55-82 for the
# count (runs of the same command differ by up to ~20% on a loaded machine); CPU time (user
# + system) by 1.7 and 2.9-3.0 s per Mpx. Wall time was 2-5x the CPU time on the shared
# machine; on an idle one it is about the CPU time.

#: Peak resident memory of the process before the pixels count: interpreter, numpy,
#: rasterio, torch, the sandbox (bytes); and with BuildingNet's weights loaded and run
#: once (``auto`` with the building model on).
BASE_BYTES = 650e6
BUILDING_BASE_BYTES = 1_100e6
#: Bytes per pixel as read of the spectral rules' whole-image pass (the image's validity
#: mask, float32 bands, indices, smoothed maps, class maps, the regions' masks), over the
#: samples themselves (83 measured, 101 before issue 23's savings: kept as the margin).
SPECTRAL_BYTES_PER_PX = 100.0
#: BuildingNet: bytes per pixel as read (float32 RGB, validity) and per pixel at its scale
#: (resampled input, features, scores, instance labels).
BUILDING_INPUT_BYTES_PER_PX = 16.0
BUILDING_BYTES_PER_PX = 40.0
#: GRAFT / dense CLIP (not measured here: no weights on the machine): per pixel at the
#: model's scale (``model_gsd_m``), from the region estimate's figures
#: (:data:`viper_rs.region.cost.DETECTOR_COSTS`), and their process with weights loaded.
TOWER_BYTES_PER_PX = 100.0
TOWER_BASE_BYTES = 1_500e6
TOWER_S_PER_MPX = 12.0
#: CPU seconds per million pixels (decode included): the spectral pass per pixel as read,
#: BuildingNet per pixel at its scale; and seconds before the first pixel.
SPECTRAL_S_PER_MPX = 1.7
BUILDING_S_PER_MPX = 3.0
BASE_S = 5.0
#: Seconds per million source pixels decoded beyond those a read returns (a read averaged
#: down decodes them all: 16 Mpx GeoTIFF, PNG and JPEG reads took 1.5-3 s).
DECODE_S_PER_MPX = 0.2
#: The decoder's own working memory, per sample of the source pixels a read covers: a
#: progressive JPEG keeps every DCT coefficient (2 bytes a sample at full chroma; a 16 Mpx
#: 4:2:0 progressive JPEG measured +46 MB over its baseline twin); GDAL holds an interlaced
#: PNG whole (one sample) before copying it out. Charged for every file of the format: the
#: header GDAL reads does not say whether it is progressive or interlaced.
DECODER_BYTES_PER_SAMPLE: dict[str, float] = {"JPEG": 2.0, "PNG": 1.0}
#: BuildingNet's scale (m/px), the input resolutions it accepts and the most pixels it runs
#: on in one piece (the shipped model's config; ``auto`` answers buildings with the
#: spectral rules outside them).
BUILDING_GSD_M = 0.3
BUILDING_GSD_RANGE_M = (0.1, 1.2)
BUILDING_MAX_PIXELS = 40_000_000


# ----------------------------------------------------------------------------- results
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
        """``"about 9,800 MB and 4 min"``."""
        return f"about {bytes_text(self.memory_bytes)} and {duration_text(self.seconds)}"


def estimate_image(header: RasterHeader, settings: Settings,
                   gsd: float | None = None) -> ImageCost:
    """The cost of a question about the read ``header`` describes with ``settings``'
    detector (``gsd``: the ground size the caller gives an image without a CRS): the most
    any question may take (``auto`` answers buildings with BuildingNet and the rest with
    the spectral rules: the larger of the two)."""
    px = header.pixels
    source_px = header.source_width * header.source_height
    samples = px * header.bands * header.itemsize
    decoder = DECODER_BYTES_PER_SAMPLE.get(header.driver, 0.0) * source_px * header.bands
    ground = header.ground_pixel_m or (gsd if header.crs is None else None)
    base, memory, seconds = BASE_BYTES, px * SPECTRAL_BYTES_PER_PX, px * SPECTRAL_S_PER_MPX / 1e6
    model_px = 0
    if settings.detector in ("graft", "clip"):
        scale = (ground / settings.model_gsd_m) ** 2 if ground else 1.0
        model_px = int(px * scale)
        base = TOWER_BASE_BYTES
        memory = max(memory, model_px * TOWER_BYTES_PER_PX)
        seconds = max(seconds, model_px * TOWER_S_PER_MPX / 1e6)
    else:
        model_px = _building_pixels(header, settings, ground)
        if settings.detector == "auto" and settings.building_model:
            base = BUILDING_BASE_BYTES
        if model_px:
            memory = max(memory, px * BUILDING_INPUT_BYTES_PER_PX
                         + model_px * BUILDING_BYTES_PER_PX)
            seconds = max(seconds, model_px * BUILDING_S_PER_MPX / 1e6)
    return ImageCost(pixels=px, model_pixels=model_px,
                     memory_bytes=int(base + decoder + samples + memory),
                     seconds=float(BASE_S + seconds
                                   + (source_px - px) * DECODE_S_PER_MPX / 1e6))


def _building_pixels(header: RasterHeader, settings: Settings, ground: float | None) -> int:
    """Pixels BuildingNet would run on (0 when ``auto`` would not use it)."""
    if settings.detector != "auto" or not settings.building_model or header.bands < 3:
        return 0
    lo, hi = BUILDING_GSD_RANGE_M
    if ground is None or not lo <= ground <= hi:
        return 0
    n = int(header.pixels * (ground / BUILDING_GSD_M) ** 2)
    return n if n <= BUILDING_MAX_PIXELS else 0


def check_image(header: RasterHeader, cost: ImageCost, budget: Budget) -> None:
    """Raise :class:`~viper_rs.core.errors.ImageTooLarge` when ``cost`` is over ``budget``, with
    the estimate, the budget and the ways out."""
    over = []
    if cost.memory_bytes > budget.memory_bytes:
        over.append(f"{bytes_text(cost.memory_bytes)} of memory, over the "
                    f"{bytes_text(budget.memory_bytes)} budget ({setting_hint('image_max_memory_mb', 'MB')})")
    if cost.seconds > budget.seconds:
        over.append(f"{duration_text(cost.seconds)}, over the {duration_text(budget.seconds)} budget "
                    f"({setting_hint('image_max_time_s', 'S')})")
    if not over:
        return
    fit = _fitting_side(header, cost, budget)
    crop = (f"crop it to at most about {fit:,} x {fit:,} px" if fit else "crop it")
    raise ImageTooLarge(
        f"{header.path}: {header.width:,} x {header.height:,} px x {header.bands} band(s) would "
        f"take about {' and '.join(over)}; {ways_out(header.crs is not None, crop)}"
    )


def _fitting_side(header: RasterHeader, cost: ImageCost, budget: Budget) -> int:
    """Side (px) of a square crop that would fit the budget (0 when none would)."""
    per_px_bytes = (cost.memory_bytes - BUILDING_BASE_BYTES) / max(cost.pixels, 1)
    per_px_s = (cost.seconds - BASE_S) / max(cost.pixels, 1)
    room = min((budget.memory_bytes - BUILDING_BASE_BYTES) / max(per_px_bytes, 1e-9),
               (budget.seconds - BASE_S) / max(per_px_s, 1e-12))
    return int(math.sqrt(room)) // 100 * 100 if room > 10_000 else 0


def image_admission(settings: Settings, gsd: float | None = None
                    ) -> Callable[[RasterHeader], None]:
    """The :func:`viper_rs.core.admission.admission` check of ``settings``' image budget."""
    budget = Budget.for_image(settings)

    def check(header: RasterHeader) -> None:
        check_image(header, estimate_image(header, settings, gsd), budget)

    return check

