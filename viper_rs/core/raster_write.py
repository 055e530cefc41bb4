"""Writing a GeoImage as a GeoTIFF."""

from __future__ import annotations

from pathlib import Path

from viper_rs.core.geo import GeoImage


def write_geotiff(image: GeoImage, path: str | Path) -> Path:
    """Write ``image`` as a (tiled, deflate) GeoTIFF with band descriptions and nodata mask."""
    import rasterio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff", "width": image.width, "height": image.height,
        "count": image.data.shape[0], "dtype": image.data.dtype.name, "crs": image.crs,
        "transform": image.transform, "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(image.data)
        for i, name in enumerate(image.band_names, 1):
            ds.set_band_description(i, name)
        if not image.valid.all():
            ds.write_mask((image.valid * 255).astype("uint8"))
    return path
