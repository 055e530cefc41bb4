"""What a region gives its detector so that answers do not depend on how the region is
cut (into source tiles or into chips): the chip halo the detector's rules need
(:meth:`~viper_rs.core.detector.Detector.region_halo`) and, for a detector measuring with
image-wide statistics (the spectral one), the statistics of the whole region
(:meth:`~viper_rs.core.detector.Detector.with_stats_of`)."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from viper_rs.core.detector import Detector
from viper_rs.core.geo import GeoImage
from viper_rs.region.chips import HALO_M, layout, read_chip
from viper_rs.region.image import RegionImage
from viper_rs.region.scan import ChipReader

log = logging.getLogger(__name__)

#: Core side (px) of the chips the region's statistics are measured on; they are cut
#: from the working grid, not from the sources or the question's chips.
STATS_CHIP_PX = 1024

#: Chips whose results (spectral class maps, learned building scores and instances) the
#: region's detectors keep: the chip being scored (its queries and its cut-object check
#: read them); a chip is not analysed again, so keeping more (the single-image default is
#: 8: about 33 bytes per pixel of class maps, 8 of building scores) only held memory
#: (issue 22: 8 chips of 2-4 Mpx held ~0.6-1 GB of a 1 km2 scan at 0.5 m).
REGION_CACHE_ITEMS = 1


def region_halo_m(det: Detector, image: RegionImage, default: float) -> float:
    """The default chip halo (m) of ``det`` on ``image``'s working grid: what its rules
    read (:meth:`~viper_rs.core.detector.Detector.region_halo`), ``default`` for a
    detector whose rules read no wider than its window."""
    return det.region_halo(image.grid.pixel_size, default)


def chip_halo_m(halo_m: float | str | None, det: Detector, image: RegionImage) -> float:
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


def stats_images(image: RegionImage, halo: float,
                 reader: ChipReader | None = None) -> list[GeoImage]:
    """The region's working grid cut into chips of :data:`STATS_CHIP_PX` px read with
    ``halo`` (grid units) around them, each with its core as ``roi``: what image-wide
    statistics are measured on, so a region gives the same statistics however its sources
    are tiled. Unreadable chips and chips without a valid core pixel are left out."""
    from viper_rs.core.errors import ImageError

    chips = layout(image, STATS_CHIP_PX * image.grid.pixel_size, halo)
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
    return images


def with_region_stats(det: Detector, image: RegionImage,
                      reader: ChipReader | None = None) -> Detector:
    """``det`` measuring every chip with the region's image-wide statistics (measured on
    :func:`stats_images`) when it measures with such statistics and has none of its own,
    its detectors keeping the results of :data:`REGION_CACHE_ITEMS` chip; else ``det``."""
    halo = det.stats_halo(image.grid.pixel_size)
    if halo is None:
        return det
    return det.with_stats_of(stats_images(image, halo, reader), REGION_CACHE_ITEMS)
