"""Queryable Earth: chip many tiles, embed every chip, search them by text on a map.

``build_index`` (chips -> embeddings -> LanceDB, locally or on Ray), ``Searcher`` (top
chips for a query, GeoJSON, density rasters) and ``ChipIndex`` (the on-disk index).
"""

from viper_rs.index.build import BuildReport, build_index
from viper_rs.index.chips import ChipGrid
from viper_rs.index.query import DensityMap, Searcher, SearchResult, hits_geojson
from viper_rs.index.store import ChipIndex, Hit, IndexMeta

__all__ = [
    "BuildReport", "ChipGrid", "ChipIndex", "DensityMap", "Hit", "IndexMeta",
    "SearchResult", "Searcher", "build_index", "hits_geojson",
]
