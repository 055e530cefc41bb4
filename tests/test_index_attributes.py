"""Chip attributes in the index (issue 22.4): what the detectors measure per chip is stored
beside the embedding and ranks the queries that name it; unknown is never 0; old indexes
are searched, then upgraded."""

from __future__ import annotations

import json
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from viper_rs.core.config import Settings
from viper_rs.core.detector import DetectorBase, ScoreMap
from viper_rs.core.geo import GeoImage
from viper_rs.core.raster_write import write_geotiff
from viper_rs.index import ChipGrid, ChipIndex, Searcher, build_index
from viper_rs.index.attributes import (
    ATTRIBUTE_COLUMNS,
    ChipMeasures,
    DetectorAttributes,
    build_attributer,
    describe,
    rank_attribute,
)
from viper_rs.index.embedders import SPECTRAL_CLASSES, SpectralChipEmbedder
from viper_rs.index.store import FOOTPRINT_COLUMNS, META_FILE, TABLE, table_schema
from viper_rs.synthetic import make_scene
from viper_rs.ui import search as rs

GRID = ChipGrid(chip_m=128, overlap=0.25)
SPEC = SpectralChipEmbedder()


def _meta() -> dict:
    return {"embedder": "spectral", "model_id": SPEC.model_id, "dim": SPEC.dim,
            "chip_m": 256.0, "overlap": 0.25, "min_valid": 0.5,
            "dimensions": list(SPECTRAL_CLASSES)}


def _row(i: int, lon: float) -> dict:
    corners = [lon, 1.001, lon + 0.001, 1.001, lon + 0.001, 1.0, lon, 1.0]
    return {"id": f"chip{i}", "source": f"/x/s{i}.tif", "source_name": f"s{i}.tif",
            "source_key": f"/x/s{i}.tif", "fingerprint": "f", "datetime": None,
            "crs": "EPSG:4326", "col": 0, "row": 0, "width": 64, "height": 64,
            "west": lon, "south": 1.0, "east": lon + 0.001, "north": 1.001,
            "corners": corners, "white_point": 255.0, "valid": 1.0}


def _vector(**fractions: float) -> np.ndarray:
    v = np.zeros(SPEC.dim, np.float32)
    for cls, f in fractions.items():
        v[SPECTRAL_CLASSES.index(cls)] = f
    return v


def _measured(building: float | None, count: int | None, why: str | None = None) -> dict:
    m = ChipMeasures({"building_share": building, "building_count": count, "road_share": 0.1,
                      "water_share": 0.0, "vegetation_share": 0.5},
                     {"road": "spectral", "water": "spectral", "vegetation": "spectral"})
    if building is None:
        m.unknown["building"] = why or "not measurable"
    else:
        m.by["building"] = "buildingnet"
    return m.columns("test-recipe")


# ---------------------------------------------------------------------------- ranking
def test_building_rich_chip_ranks_first_for_buildings(tmp_path):
    """Prairie whose spectral building fraction is high (the issue: 10 North Dakota chips)
    against a town chip the building model measured full of buildings."""
    from viper_rs.index import IndexMeta

    index = ChipIndex.create(tmp_path / "ix", IndexMeta(**_meta()))
    rows = [{**_row(0, 10.0), **_measured(0.0, 0)},  # prairie: the model saw no building
            {**_row(1, 20.0), **_measured(0.45, 31)},  # town
            {**_row(2, 30.0), **_measured(None, None, "the image is 5 m/px, outside ...")},
            {**_row(3, 40.0), **_measured(0.02, 1)}]  # a farmstead
    vectors = np.stack([_vector(building=0.75), _vector(building=0.05),
                        _vector(building=0.6), _vector(building=0.3)])
    index.add(rows, vectors)
    result = Searcher(index).search("buildings", k=4)
    assert [h.id for h in result.hits] == ["chip1", "chip3", "chip2", "chip0"]
    assert result.ranked_by == "building_share"
    town = result.hits[0]
    assert town.attributes["building_share"] == pytest.approx(0.45)
    assert town.attributes["building_count"] == 31 and town.measured_by["building"] == "buildingnet"
    assert result.hits[2].attributes["building_share"] is None  # unknown stays unknown
    assert "5 m/px" in result.hits[2].unknown["building"]
    assert any("unknown on 1 of the chips" in n for n in result.notes), result.notes
    # the embedding alone still ranks the prairie first (what the issue saw)
    assert Searcher(index).search("buildings", k=1, rank="embedding").hits[0].id == "chip0"
    # the hit carries its attributes to JSON, GeoJSON and the app's table
    d = result.to_dict()
    assert d["ranked_by"] == "building_share"
    assert d["hits"][0]["attributes"]["building_count"] == 31
    fc = result.geojson()
    assert fc["features"][0]["properties"]["attributes"]["building_share"] == pytest.approx(0.45)
    rows_ = rs.result_rows(result.hits, result.ranked_by)
    assert rows_[0][2] == "45.0% buildings (31)"
    assert rows_[2][2] == "buildings unknown"
    assert len(rows_[0]) == len(rs.RESULT_COLUMNS)


def test_ties_are_broken_by_the_embedding_and_bbox_applies(tmp_path):
    from viper_rs.index import IndexMeta

    index = ChipIndex.create(tmp_path / "ix", IndexMeta(**_meta()))
    rows = [{**_row(i, 10.0 + i), "water_share": share, "attr_recipe": "r"}
            for i, share in enumerate([1.0, 1.0, 0.5, 1.0])]
    vectors = np.stack([_vector(water=w) for w in (0.2, 0.9, 0.99, 0.5)])
    index.add(rows, vectors)
    s = Searcher(index)
    assert [h.id for h in s.search("water", k=3).hits] == ["chip1", "chip3", "chip0"]
    assert [h.id for h in s.search("lakes", k=4).hits] == ["chip1", "chip3", "chip0", "chip2"]
    boxed = s.search("water", k=4, bbox=(11.5, 0.9, 13.5, 1.1)).hits
    assert [h.id for h in boxed] == ["chip3", "chip2"]


def test_concepts_without_an_attribute_rank_by_the_embedding():
    assert rank_attribute("trees", "spectral")[0] is None  # tree canopy: no attribute
    assert rank_attribute("tennis court", "clip")[0] is None  # not in the vocabulary
    assert rank_attribute("houses", "clip")[0].column == "building_share"
    assert rank_attribute("roads", "spectral")[0].column == "road_share"
    attr, notes = rank_attribute("swimming pool", "clip")  # approximated: CLIP reads it
    assert attr is None and "approximates" in notes[0]
    assert rank_attribute("swimming pool", "spectral")[0].column == "water_share"


# ---------------------------------------------------------------------------- measuring
class _Raises(DetectorBase):
    name = "broken"

    def score_map(self, image, query):
        raise RuntimeError("model exploded")


class _Half(DetectorBase):
    """Half of every chip is the concept; one region per query."""

    name = "half"

    def score_map(self, image, query):
        scores = np.zeros(image.shape, np.float32)
        scores[:, : image.width // 2] = 1.0
        return ScoreMap(scores, 0.5, query, query, self.name)

    def find(self, image, query):
        return [object()]


def test_a_detector_that_fails_gives_unknown_not_zero():
    image = GeoImage.from_array(np.full((3, 32, 32), 90, np.uint8), "R,G,B", gsd=1.0)
    m = DetectorAttributes(_Raises(), "r").measure(image)
    assert all(m.values[c] is None for c in ATTRIBUTE_COLUMNS)
    assert set(m.unknown) == {"building", "road", "water", "vegetation"}
    assert "model exploded" in m.unknown["building"]
    m = DetectorAttributes(_Half(), "r").measure(image)
    assert m.values["water_share"] == pytest.approx(0.5) and m.values["building_count"] == 1
    assert m.by["road"] == "half" and not m.unknown


@pytest.fixture(scope="module")
def coarse_and_fine(tmp_path_factory):
    """One synthetic scene at 1 m (in the building model's range) and one at 5 m (out)."""
    folder = tmp_path_factory.mktemp("res")
    write_geotiff(make_scene(3, size=128, gsd=1.0).image, folder / "fine_1m.tif")
    write_geotiff(make_scene(4, size=64, gsd=5.0).image, folder / "coarse_5m.tif")
    return folder


def test_building_model_out_of_range_gives_unknown_not_zero(coarse_and_fine, tmp_path):
    out = tmp_path / "ix"
    report = build_index([coarse_and_fine], out, embedder="spectral", grid=ChipGrid(512),
                         progress=False, overlays=False)
    assert report.indexed == 2 and report.attributes.startswith("attributes-v1")
    assert any("outside the learned building model" in why for why in report.unknown)
    rows = ChipIndex.open(out).table.to_arrow().to_pylist()
    by_name = {r["source_name"]: r for r in rows}
    coarse, fine = by_name["coarse_5m.tif"], by_name["fine_1m.tif"]
    assert coarse["building_share"] is None and coarse["building_count"] is None
    info = json.loads(coarse["attr_info"])
    assert "5 m/px" in info["unknown"]["building"] and "outside" in info["unknown"]["building"]
    for c in ("road_share", "water_share", "vegetation_share"):  # land cover is measured
        assert coarse[c] is not None
    assert info["by"]["water"] == "spectral"
    assert fine["building_share"] is not None and fine["building_share"] > 0
    assert fine["building_count"] > 0
    assert json.loads(fine["attr_info"])["by"]["building"] == "buildingnet"
    hits = Searcher(out).search("buildings", k=2).hits
    assert [h.source_name for h in hits] == ["fine_1m.tif", "coarse_5m.tif"]
    assert "unknown" in describe(hits[1].attributes, hits[1].measured_by, hits[1].unknown,
                                 rs_attr("building_share"))


def rs_attr(column):
    from viper_rs.index.attributes import BY_COLUMN

    return BY_COLUMN[column]


def test_attributer_shares_the_spectral_class_maps():
    embedder = SpectralChipEmbedder()
    attributer = build_attributer(Settings(building_model=False), embedder.detector)
    image = make_scene(0, size=96).image
    embedder.embed([image])
    attributer.measure(image)
    assert embedder.detector.computations == 1  # one class-map computation for both
    assert "spectral" in attributer.recipe and "buildingnet" not in attributer.recipe


# ---------------------------------------------------------------------------- old indexes
def _legacy_index(path: Path, folder: Path) -> int:
    """A format-1 index (no attribute columns) of ``folder``, as the viper-rs before this
    change wrote it; returns its chips."""
    fresh = path.parent / "fresh"
    build_index([folder], fresh, embedder="spectral", grid=GRID, progress=False,
                overlays=False, attributes=False)
    table = ChipIndex.open(fresh).table.to_arrow()
    old_schema = pa.schema([f for f in table_schema(SPEC.dim)
                            if f.name in (*FOOTPRINT_COLUMNS, "vector")])
    db = lancedb.connect(str(path))
    db.create_table(TABLE, data=table.select(old_schema.names).cast(old_schema))
    db.create_table("skipped", schema=pa.schema([pa.field("id", pa.string()),
                                                  pa.field("reason", pa.string())]))
    meta = json.loads((fresh / META_FILE).read_text())
    meta["version"] = 1
    (path / META_FILE).write_text(json.dumps(meta))
    return table.num_rows


def test_an_old_index_is_searched_then_upgraded_by_a_build(tmp_path):
    folder = tmp_path / "tiles"
    write_geotiff(make_scene(0, size=256).image, folder / "scene0.tif")
    old = tmp_path / "old"
    n = _legacy_index(old, folder)
    index = ChipIndex.open(old)
    assert not index.has_attributes and "built before chips carried" in index.outdated()
    result = Searcher(old).search("buildings", k=3)  # still searchable, and it says why
    assert len(result.hits) == 3 and result.ranked_by is None
    assert any("format 1" in note and "index build" in note for note in result.notes)
    vectors = {r["id"]: r["vector"] for r in index.table.to_arrow().to_pylist()}
    report = build_index([folder], old, embedder="spectral", grid=GRID, progress=False,
                         overlays=False, settings=Settings(building_model=False))
    assert report.indexed == 0 and report.existing == n and report.remeasured == n
    index = ChipIndex.open(old)
    assert index.has_attributes and index.outdated() is None
    assert json.loads((old / META_FILE).read_text())["version"] == 2
    rows = index.table.to_arrow().to_pylist()
    assert len(rows) == n and all(r["building_share"] is not None for r in rows)
    assert {r["id"]: r["vector"] for r in rows} == vectors  # embeddings kept
    assert Searcher(old).search("buildings", k=3).ranked_by == "building_share"
    # measured by this recipe: the next build has nothing to do
    again = build_index([folder], old, embedder="spectral", grid=GRID, progress=False,
                        overlays=False, settings=Settings(building_model=False))
    assert again.remeasured == 0 and again.indexed == 0


def test_chips_indexed_without_attributes_are_measured_later(tmp_path):
    folder = tmp_path / "tiles"
    write_geotiff(make_scene(1, size=256).image, folder / "scene1.tif")
    out = tmp_path / "ix"
    first = build_index([folder], out, embedder="spectral", grid=GRID, progress=False,
                        overlays=False, attributes=False)
    assert first.attributes == "" and "not measured" in first.summary()
    hits = Searcher(out).search("water", k=2)
    assert all(h.attributes["water_share"] is None for h in hits.hits)
    assert any("indexed without attributes" in n for n in hits.notes), hits.notes
    second = build_index([folder], out, embedder="spectral", grid=GRID, progress=False,
                         overlays=False, settings=Settings(building_model=False))
    assert second.remeasured == first.indexed and second.indexed == 0
    assert all(h.attributes["water_share"] is not None
               for h in Searcher(out).search("water", k=3).hits)


def test_the_app_updates_an_old_index_before_searching(tmp_path):
    folder = tmp_path / "tiles"
    write_geotiff(make_scene(2, size=256).image, folder / "scene2.tif")
    old = tmp_path / "old"
    _legacy_index(old, folder)
    settings = Settings(cache_dir=tmp_path / "cache", detector="spectral", building_model=False)
    region = rs.RegionSearch.for_folders([folder], settings, index=old, chip_m=128)
    assert region.outdated() and "the next search updates it" in region.status()
    view = region.search("buildings", k=3)
    assert view.ok, view.message
    assert "Indexed" in view.message and "Ranked by the cover" in view.message
    assert "measured for cover" in view.message
    assert not region.outdated() and "updates it" not in region.status()
    assert all(row[2].endswith(")") and "% buildings (" in row[2] for row in view.rows)


# ---------------------------------------------------------------------------- real data
@pytest.mark.data
def test_real_towns_rank_before_prairie_for_buildings(shared_data, tmp_path):
    tiles = shared_data / "labeled" / "oam_osm_buildings"
    prairie = shared_data / "naip" / "north_dakota" / "m_4709963_se_14_1_20140720.tif"
    sources = [prairie, tiles / "kampala_ug_309606_261636.tif",
               tiles / "zanzibar_tz_319299_270961.tif"]  # no building by its labels
    out = tmp_path / "ix"
    build_index(sources, out, embedder="spectral", grid=ChipGrid(256), progress=False,
                overlays=False)
    result = Searcher(out).search("buildings", k=5)
    assert result.hits[0].source_name.startswith("kampala_ug_")
    assert result.hits[0].attributes["building_share"] > 0.3
    assert result.hits[0].attributes["building_count"] > 10
    rest = result.hits[1:]
    assert all(h.source_name.startswith("m_4709963") for h in rest)  # unknown before 0
    assert all(h.attributes["building_share"] is None for h in rest)
    # before: the embedding alone ranked prairie first
    before = Searcher(out).search("buildings", k=1, rank="embedding").hits[0]
    assert before.source_name.startswith("m_4709963")
