"""Questions about a region: one program over many tiles, exact totals across chip borders.

A region (a bounding box over many GeoTIFFs) is answered like one big image: the program is
planned and run once; ``find`` is answered chip by chip and the chip results are stitched
into whole objects on one working grid (:mod:`.grid`, :mod:`.image`, :mod:`.chips`,
:mod:`.stitch`, :mod:`.detector`); :func:`ask_region` is the entry point.
"""

from viper_rs.region.api import ChipReport, ask_region, open_region
from viper_rs.region.detector import RegionDetector
from viper_rs.region.grid import WorkingGrid, build_grid
from viper_rs.region.image import RegionImage

__all__ = [
    "ChipReport", "RegionDetector", "RegionImage", "WorkingGrid", "ask_region", "build_grid",
    "open_region",
]
