"""ask_region: one question about a region of many sources, with the chips' report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from viper_rs.answer import Answer
from viper_rs.config import Settings
from viper_rs.detector import Detector
from viper_rs.errors import InputError
from viper_rs.index.sources import Source, scan
from viper_rs.region.chips import Chip, layout
from viper_rs.region.detector import ChipReader, RegionDetector
from viper_rs.region.grid import build_grid, parse_bbox
from viper_rs.region.image import RegionImage

#: Default chip core side and halo (metres).
CHIP_M = 256.0
HALO_M = 64.0


@dataclass
class ChipReport:
    """Per-chip outcome of a region question and the coverage it adds up to."""

    chips: list[dict[str, Any]] = field(default_factory=list)
    coverage: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):  # noqa: ANN204 - iterate the chips
        return iter(self.chips)

    def __len__(self) -> int:
        return len(self.chips)


def open_region(
    sources: Sequence[str | Path | Source],
    bbox: str | Sequence[float] | None = None,
    pixel_m: float | None = None,
    crs: Any = None,
) -> RegionImage:
    """The RegionImage of ``sources`` (files, folders, .txt lists, URLs or Sources) over
    ``bbox`` (WGS84 W,S,E,N); InputError when no source is readable or the bbox touches none."""
    given = [s for s in sources if isinstance(s, Source)]
    names = [s for s in sources if not isinstance(s, Source)]
    found = scan(names, extra=given)
    if not found.sources:
        why = "; ".join(f"{u}: {r}" for u, r in found.skipped[:3])
        raise InputError("no readable source raster" + (f" ({why})" if why else ""))
    grid = build_grid(found.sources, parse_bbox(bbox), pixel_m=pixel_m, crs=crs)
    nb = min(s.count for s in found.sources)
    return RegionImage(grid=grid, sources=found.sources, band_names=_band_names(found.sources[0], nb))


def _band_names(src: Source, nb: int) -> list[str]:
    """Band roles of a source as GeoImage reads them (first ``nb`` bands)."""
    import rasterio

    from viper_rs.geo import _band_roles

    try:
        with rasterio.open(src.uri) as ds:
            names = _band_roles([c.name for c in ds.colorinterp], list(ds.descriptions or []),
                                {**ds.tags(), **{f"band{i}": ds.tags(i) for i in range(1, ds.count + 1)}})
    except Exception:  # noqa: BLE001 - fall back to the usual order
        names = ["R", "G", "B", "NIR"]
    names = ["NIR" if n == "ALPHA" else n for n in names]
    return (names + [f"BAND{i + 1}" for i in range(len(names), nb)])[:nb]


def coverage(image: RegionImage, chips: list[Chip]) -> dict[str, Any]:
    """Area scanned (m2), its share of the requested area, and whether chips are missing."""
    requested = float(image.grid.area.area) * float(image.row_pixel_area.mean()) \
        / (image.grid.pixel_size ** 2)
    scanned = sum(c.valid_m2 for c in chips if c.status == "ok")
    failed = [c.id for c in chips if c.status == "failed"]
    return {
        "requested_m2": round(requested, 3),
        "scanned_m2": round(scanned, 3),
        "share": round(min(scanned / requested, 1.0), 6) if requested > 0 else 0.0,
        "partial": bool(failed),
        "failed_chips": failed,
    }


def chip_rows(image: RegionImage, chips: list[Chip]) -> list[dict[str, Any]]:
    """Plain per-chip records: id, sources, WGS84 footprint, status, ms."""
    out = []
    for c in chips:
        status = c.status if c.status != "pending" else "skipped"
        row = {
            "id": c.id, "sources": [image.sources[k].name for k in c.sources],
            "footprint_wgs84": image.grid.lonlat_bounds(*c.core), "status": status,
            "ms": round(c.ms, 3),
        }
        if c.error or c.status == "pending":
            row["reason"] = c.error or "not read (the program asked for no detection)"
        out.append(row)
    return out


def ask_region(
    sources: Sequence[str | Path | Source] | RegionImage,
    question: str,
    bbox: str | Sequence[float] | None = None,
    chip_m: float = CHIP_M,
    halo_m: float = HALO_M,
    detector: str | Detector | None = None,
    settings: Settings | None = None,
    planner: Any = None,
    pixel_m: float | None = None,
    crs: Any = None,
    reader: ChipReader | None = None,
    agent: Any = None,
) -> tuple[Answer, ChipReport]:
    """Answer ``question`` about the region of ``sources`` (in ``bbox``), as one image: the
    program runs once; ``find`` is answered chip by chip and stitched. Returns the Answer
    (notes name missing coverage) and the ChipReport (per chip, and coverage)."""
    from viper_rs.agent import Agent
    from viper_rs.vision.factory import build_detector

    settings = settings or Settings.from_env()
    image = sources if isinstance(sources, RegionImage) else open_region(sources, bbox, pixel_m, crs)
    chips = layout(image, chip_m, halo_m)
    det = detector if detector is not None else settings.detector
    inner = build_detector(det, settings) if isinstance(det, str) else det
    region_det = RegionDetector(inner, image, chips, settings=settings, reader=reader)
    own = agent is None
    agent = agent or Agent(settings=settings, detector=region_det, planner=planner)
    previous = agent.detector
    agent.detector = region_det
    try:
        answer = agent.ask(image, question)  # type: ignore[arg-type]
    finally:
        agent.detector = previous
        if own:
            agent.close()
    report = ChipReport(chips=chip_rows(image, chips), coverage=coverage(image, chips))
    for note in region_det.coverage_notes():
        if note not in answer.notes:
            answer.notes.append(note)
    return answer, report
