"""The oracle for a mosaic: ground truth of ONE synthetic scene, sampled on any chip grid."""

from __future__ import annotations

import numpy as np

from viper_rs.core.detector import ScoreMap
from viper_rs.core.geo import GeoImage
from viper_rs.vision.oracle import OracleDetector


class MosaicOracle(OracleDetector):
    """A perfect detector for chips cut from (or reprojected out of) one synthetic scene.

    ``score_map`` samples the scene's instance raster through the chip's CRS and transform
    (nearest), so any chip of the scene's ground gets its exact ground truth; instance ids
    are the scene's object ids (global: every part of an id is one object).
    """

    instance_ids_global = True
    min_area_m2 = 0.0

    def _check(self, image: GeoImage) -> None:
        """Any image of the scene's ground is accepted."""

    def score_map(self, image: GeoImage, query: str) -> ScoreMap:
        """1.0 on ground-truth pixels of the matching classes, with the scene's object ids."""
        from rasterio.enums import Resampling
        from rasterio.warp import reproject

        concept, classes = self.resolve(query)
        truth = self.scene.image
        inst = np.zeros(image.shape, dtype=np.int32)
        reproject(self.scene.instances.astype(np.int32), inst, src_transform=truth.transform,
                  src_crs=truth.crs, dst_transform=image.transform, dst_crs=image.crs,
                  resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
        ids = [o.id for o in self.scene.objects if o.cls in classes]
        hit = np.isin(inst, ids) & image.valid
        return ScoreMap(scores=hit.astype(np.float32), threshold=0.5, query=query,
                        label=concept, detector=self.name, instances=np.where(hit, inst, 0))
