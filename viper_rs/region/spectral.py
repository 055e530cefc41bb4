"""The spectral detector over a region: one set of scene statistics for every chip, and
the halo its windowed rules need, so that answers do not depend on how the region is cut
(into source tiles or into chips)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from viper_rs.core.detector import Detector
from viper_rs.region.chips import HALO_M, layout, read_chip
from viper_rs.region.image import RegionImage
from viper_rs.region.scan import ChipReader

log = logging.getLogger(__name__)

#: Core side (px) of the chips the region's statistics are measured on; they are cut
#: from the working grid, not from the sources or the question's chips.
STATS_CHIP_PX = 1024

#: The spectral chip halo in units of the windowed rules' reach (:func:`context_m`). Rules
#: over whole paved segments (the building / road / parking shape rules) read as far as
#: their segment, which a halo of one reach still cuts: measured on real NAIP cut 2 x 2,
#: one reach left building areas 4-8% off the uncut tile at small chips, two reaches
#: 0-0.8% (North Dakota 5 m: 320 m chips -8.4% -> -0.8%; Napa 1 m: 48 m chips -4.4% -> 0%).
OBJECT_REACH = 2.0


#: Chips whose results (spectral class maps, learned building scores and instances) the
#: region's detectors keep: the chip being scored (its queries and its cut-object check
#: read them); a chip is not analysed again, so keeping more (the single-image default is
#: 8: about 33 bytes per pixel of class maps, 8 of building scores) only held memory
#: (issue 22: 8 chips of 2-4 Mpx held ~0.6-1 GB of a 1 km2 scan at 0.5 m).
REGION_CACHE_ITEMS = 1


def spectral_part(det: Any) -> Any:
    """The spectral detector that answers (part of) ``det``'s concepts: ``det`` itself, the
    primary of a routing detector (buildings by the learned model, the rest by spectral),
    or None."""
    from viper_rs.vision.routed import RoutedDetector
    from viper_rs.vision.spectral import SpectralDetector

    if isinstance(det, RoutedDetector):
        det = det.primary
    return det if isinstance(det, SpectralDetector) else None


def is_spectral(det: Any) -> bool:
    """Whether ``det`` is, or routes concepts to, the spectral detector (the object)."""
    return spectral_part(det) is not None


def region_halo_m(det: Any, image: RegionImage, default: float) -> float:
    """The default chip halo (m): when the spectral detector answers, :data:`OBJECT_REACH`
    times what its windowed rules read around a pixel
    (:func:`~viper_rs.vision.spectral.context_m` at the working pixel size), and at least
    ``default`` for a routing detector; ``default`` for others."""
    spectral = spectral_part(det)
    if spectral is None:
        return default
    from viper_rs.vision.spectral import context_m

    halo = OBJECT_REACH * context_m(image.grid.pixel_size, spectral.thresholds)
    return halo if spectral is det else max(halo, default)


def chip_halo_m(halo_m: float | str | None, det: Any, image: RegionImage) -> float:
    """The chip halo in metres: ``halo_m``, or the detector's default (``None``/``auto``:
    :func:`region_halo_m` with :data:`~viper_rs.region.chips.HALO_M`); InputError when it
    is neither a number of metres >= 0 nor ``auto``."""
    from viper_rs.core.errors import InputError

    if halo_m is None or (isinstance(halo_m, str) and halo_m.strip().lower() == "auto"):
        return region_halo_m(det, image, HALO_M)
    try:
        value = float(halo_m)
    except (TypeError, ValueError):
        raise InputError(f"--halo-m must be a number of metres or 'auto', got {halo_m!r}") from None
    if not value >= 0:
        raise InputError(f"--halo-m must be 0 or more, got {halo_m!r}")
    return value


def region_stats(image: RegionImage, thresholds: Any = None,
                 reader: ChipReader | None = None) -> Any:
    """The spectral scene statistics of the whole region (``SceneStats``): measured on the
    region's working grid (chips of :data:`STATS_CHIP_PX` px with the rules' halo, each
    counting its core), so a region gives the same statistics however its sources are
    tiled. ``None`` when no pixel can be read."""
    from viper_rs.core.errors import ImageError
    from viper_rs.vision.spectral import DEFAULT_THRESHOLDS, context_m, scene_stats

    t = thresholds or DEFAULT_THRESHOLDS
    px = image.grid.pixel_size
    chips = layout(image, STATS_CHIP_PX * px, context_m(px, t))
    images = []
    for chip in chips:
        if chip.status == "skipped":
            continue
        try:
            img = (reader or read_chip)(image, chip)
        except Exception as exc:  # noqa: BLE001 - the chip scan reports unreadable chips
            log.info("region statistics: chip %s unreadable (%s)", chip.id, exc)
            continue
        if img is None:
            continue
        r0, c0, r1, c1 = chip.core
        roi = np.zeros(img.shape, dtype=bool)
        roi[r0 - chip.read[0]:r1 - chip.read[0], c0 - chip.read[1]:c1 - chip.read[1]] = True
        try:
            images.append(replace(img, roi=roi))
        except ImageError:  # no valid pixel in the core
            continue
    if not images:
        return None
    return scene_stats(images, t)


def with_region_stats(det: Detector, image: RegionImage,
                      reader: ChipReader | None = None) -> Detector:
    """``det`` measuring every chip with the region's statistics (:func:`region_stats`)
    when it is (or routes concepts to) a spectral detector without statistics of its own,
    its detectors keeping the results of :data:`REGION_CACHE_ITEMS` chip; else ``det``."""
    from viper_rs.vision.routed import RoutedDetector

    if isinstance(det, RoutedDetector):
        primary = with_region_stats(det.primary, image, reader)
        if primary is det.primary:
            return det
        out = RoutedDetector(primary, det.buildings.with_cache(REGION_CACHE_ITEMS), det.name)
        out.choice_note = det.choice_note
        return out
    if not is_spectral(det) or getattr(det, "stats", None) is not None:
        return det
    from viper_rs.vision.spectral import SpectralDetector

    stats = region_stats(image, det.thresholds, reader)  # type: ignore[attr-defined]
    if stats is None:
        return det
    out = SpectralDetector(det.settings, det.thresholds,  # type: ignore[attr-defined]
                           cache_size=REGION_CACHE_ITEMS, stats=stats)  # type: ignore[attr-defined]
    out.choice_note = det.choice_note
    return out
