"""Score map -> connected components -> Regions with polygons and true ground area.

Connectivity is a setting: 1 = 4-neighbour (edge-sharing pixels), 2 = 8-neighbour
(edge- or corner-sharing). The default is 2, matching how label rasters are usually
counted ("8-connected blobs").
"""

from __future__ import annotations

import numpy as np
from affine import Affine
from shapely.geometry import shape
from shapely.ops import unary_union
from skimage.measure import label as cc_label
from skimage.measure import regionprops

from viper_rs.core import budget
from viper_rs.core.geo import GeoImage
from viper_rs.core.image import Image
from viper_rs.core.regions import Region, pixel_polygon  # noqa: F401  (re-export)
from viper_rs.vision.base import ScoreMap


def label_components(mask: np.ndarray, connectivity: int = 2) -> np.ndarray:
    """Connected components of a boolean mask as an int label image (0 = background)."""
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 or 2, got {connectivity}")
    return cc_label(mask, connectivity=connectivity)


def mask_polygon(image: Image, crop: np.ndarray, origin: tuple[int, int]):
    """Vectorise a cropped boolean mask into a shapely (Multi)Polygon in the image CRS."""
    from rasterio.features import shapes

    r0, c0 = origin
    transform = image.transform @ Affine.translation(c0, r0)
    geoms = [
        shape(geom)
        for geom, val in shapes(crop.astype(np.uint8), mask=crop, transform=transform)
        if val == 1
    ]
    if not geoms:
        return None
    return geoms[0] if len(geoms) == 1 else unary_union(geoms)


def crop_area(image: Image, crop: np.ndarray, r0: int) -> float:
    """Ground area (m2, or pixels when the image has no ground size) of a cropped boolean
    mask whose top row is row ``r0`` of ``image``."""
    return float(crop.sum(axis=1) @ image.row_pixel_area[r0 : r0 + crop.shape[0]])


def crop_region(
    image: Image,
    crop: np.ndarray,
    origin: tuple[int, int],
    *,
    area: float,
    score: float,
    label: str,
    query: str,
    detector: str,
    polygon: bool = True,
    extra: dict | None = None,
) -> Region:
    """The Region of a cropped boolean mask at ``origin`` (row, col) of ``image``, with its
    ground ``area`` (:func:`crop_area`) and ``score``, and its polygon in the image CRS. The
    one way a score map's pixels become a Region, for one image and for a region's stitched
    chips alike."""
    region = Region(
        crop=np.ascontiguousarray(crop),
        origin=origin,
        image_shape=image.shape,
        label=label,
        query=query,
        score=score,
        area_m2=area,
        area_unit=image.area_unit,
        detector=detector,
        extra=dict(extra or {}),
    )
    if polygon:
        region.polygon = mask_polygon(image, crop, origin)
    return region


def in_reading_order(regions: list[Region]) -> list[Region]:
    """``regions`` sorted top to bottom, then left to right (by origin, then box), in place."""
    regions.sort(key=lambda r: (r.origin, r.bbox))
    return regions


def regions_from_labels(
    image: GeoImage,
    labels: np.ndarray,
    smap: ScoreMap,
    min_area_m2: float = 0.0,
    polygons: bool = True,
) -> list[Region]:
    """One Region per label id, dropping those smaller than ``min_area_m2``."""
    out: list[Region] = []
    scores = smap.scores
    for prop in regionprops(labels):
        budget.check()
        r0, c0, r1, c1 = prop.bbox
        crop = prop.image
        area = crop_area(image, crop, r0)
        if area < min_area_m2:
            continue
        vals = scores[r0:r1, c0:c1][crop]
        out.append(crop_region(
            image, crop, (r0, c0), area=area, score=float(vals.mean()) if vals.size else 0.0,
            label=smap.label, query=smap.query, detector=smap.detector, polygon=polygons,
        ))
    return in_reading_order(out)


def regions_from_score_map(
    image: GeoImage,
    smap: ScoreMap,
    min_area_m2: float = 0.0,
    connectivity: int = 2,
    polygons: bool = True,
) -> list[Region]:
    """Threshold ``smap`` (inside the image's answer mask), label components, build Regions."""
    fg = smap.mask & image.answer_mask
    if smap.instances is not None:
        labels = np.where(fg, smap.instances, 0)
    else:
        labels = label_components(fg, connectivity)
    return regions_from_labels(image, labels, smap, min_area_m2=min_area_m2, polygons=polygons)
