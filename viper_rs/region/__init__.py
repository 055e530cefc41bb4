"""Questions about a region: one program over many tiles, exact totals across chip borders.

A region (a bounding box over many GeoTIFFs) is answered like one big image: the program is
planned and run once; ``find`` is answered chip by chip and the chip results are stitched
into whole objects on one working grid (:mod:`.grid`, :mod:`.image`, :mod:`.chips`,
:mod:`.stitch`, :mod:`.detector`); :func:`ask_region` is the entry point. Before any chip
is read the run is estimated and checked against a budget (:mod:`.cost`:
:func:`estimate_region`, :func:`check_budget`, :class:`RegionTooLarge`).
"""

from viper_rs.region.api import (
    ChipReport,
    RegionOptions,
    ask_region,
    estimate_question,
    open_region,
)
from viper_rs.region.cost import (
    RegionCost,
    RegionTooLarge,
    check_budget,
    estimate_region,
)
from viper_rs.region.detector import RegionDetector
from viper_rs.region.grid import WorkingGrid, build_grid
from viper_rs.region.image import RegionImage

__all__ = [
    "ChipReport", "RegionCost", "RegionDetector", "RegionImage", "RegionOptions",
    "RegionTooLarge", "WorkingGrid", "ask_region", "build_grid", "check_budget", "estimate_question",
    "estimate_region", "open_region",
]
