"""Weight-free spectral detector: land cover and simple objects from R,G,B(,NIR) pixels.

Per image it computes one set of class maps (water, tree, low vegetation, bare soil,
impervious; then roads, buildings and parking lots by shape rules on the impervious
surface; built-up land as impervious density), caches them by the image's content hash,
and answers every query for that image from the cache.

With a NIR band the spectral evidence is NDVI (vegetation) and McFeeters NDWI (water);
without one it falls back to visible-band indices (excess green, blue-green darkness),
which is clearly weaker and said so in the notes. Every window size and minimum area is
defined in metres and converted with the image's ground sampling distance.

Modules: ``thresholds`` (every threshold), ``pixels`` (metres to pixels, mask cleaning,
block means), ``landcover`` (cover codes and the land-cover rules), ``objects`` (paved
segments and their shape rules), ``maps`` (:class:`ClassMaps`, :func:`compute_class_maps`),
``detector`` (:class:`SpectralDetector`), ``stats`` (:class:`SceneStats`: the image-wide
statistics, injectable so that the chips of one region share them; :func:`scene_stats`,
:func:`stats_of`, :func:`context_m`). Every name is importable from this package.
"""

from __future__ import annotations

from viper_rs.vision.spectral.detector import SpectralDetector
from viper_rs.vision.spectral.detector import _attach_polygons as _attach_polygons
from viper_rs.vision.spectral.detector import log as log
from viper_rs.vision.spectral.landcover import (
    BARE,
    COVER_NAMES,
    IMPERVIOUS,
    LOW_VEG,
    NODATA,
    TREE,
    WATER,
)
from viper_rs.vision.spectral.landcover import _land_cover as _land_cover
from viper_rs.vision.spectral.landcover import _ndvi_threshold as _ndvi_threshold
from viper_rs.vision.spectral.landcover import _roughness as _roughness
from viper_rs.vision.spectral.landcover import _water_bodies as _water_bodies
from viper_rs.vision.spectral.maps import _COVER_CODES as _COVER_CODES
from viper_rs.vision.spectral.maps import _OBJECT_LAYERS as _OBJECT_LAYERS
from viper_rs.vision.spectral.maps import FINEST_GSD_M, ClassMaps, compute_class_maps
from viper_rs.vision.spectral.maps import _fine_image_maps as _fine_image_maps
from viper_rs.vision.spectral.objects import _directional_runs as _directional_runs
from viper_rs.vision.spectral.objects import _merge_similar as _merge_similar
from viper_rs.vision.spectral.objects import _objects as _objects
from viper_rs.vision.spectral.objects import _run_evidence as _run_evidence
from viper_rs.vision.spectral.objects import _segment_paved as _segment_paved
from viper_rs.vision.spectral.pixels import _EPS as _EPS
from viper_rs.vision.spectral.pixels import _block_reduce_mean as _block_reduce_mean
from viper_rs.vision.spectral.pixels import _clean as _clean
from viper_rs.vision.spectral.pixels import _drop_small as _drop_small
from viper_rs.vision.spectral.pixels import _fill_nodata as _fill_nodata
from viper_rs.vision.spectral.pixels import _local_stats as _local_stats
from viper_rs.vision.spectral.pixels import _min_pixels as _min_pixels
from viper_rs.vision.spectral.pixels import _odd as _odd
from viper_rs.vision.spectral.pixels import _px as _px
from viper_rs.vision.spectral.pixels import _smooth as _smooth
from viper_rs.vision.spectral.pixels import _soft as _soft
from viper_rs.vision.spectral.pixels import _upsample as _upsample
from viper_rs.vision.spectral.scene import context_m, scene_stats, stats_of
from viper_rs.vision.spectral.stats import SceneStats
from viper_rs.vision.spectral.thresholds import DEFAULT_THRESHOLDS, SpectralThresholds

__all__ = [
    "BARE",
    "COVER_NAMES",
    "DEFAULT_THRESHOLDS",
    "FINEST_GSD_M",
    "IMPERVIOUS",
    "LOW_VEG",
    "NODATA",
    "TREE",
    "WATER",
    "ClassMaps",
    "SceneStats",
    "SpectralDetector",
    "SpectralThresholds",
    "compute_class_maps",
    "context_m",
    "scene_stats",
    "stats_of",
]
