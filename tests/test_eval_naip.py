"""NAIP re-imaging without internet: a minimal STAC API and a 4-band COG served on loopback."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box, mapping, shape

from eval import naip
from eval.naip import NaipError, chip_paths, fetch, footprint, open_naip_tile

# A real RSVQA-HR record (mini split, image 0: Long Island, New York).
RECORD = {
    "id": 0, "date_added": 1579864752.933048, "original_name": "1206.png",
    "sensor": "ULTRACAM_EAGLE_FALCON", "upperleft_map_x": -8146817.450917999,
    "upperleft_map_y": 4988008.615633183, "res_x": ".1524m", "res_y": ".1524m",
    "active": True,
}
UTM18 = "EPSG:26918"


def _write_naip_like(path: Path, fp, margin_m: float, res: float, seed: int) -> None:
    """4-band uint8 GeoTIFF in UTM 18N around the footprint (tiled, like a COG)."""
    x0, y0, x1, y1 = fp.polygon(UTM18, margin_m).bounds
    x0, y1 = math.floor(x0), math.ceil(y1)
    w, h = math.ceil((x1 - x0) / res), math.ceil((y1 - y0) / res)
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (4, h, w), dtype=np.uint8)
    profile = {"driver": "GTiff", "width": w, "height": h, "count": 4, "dtype": "uint8",
               "crs": UTM18, "transform": Affine(res, 0, x0, 0, -res, y1),
               "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)


def _item(item_id: str, year: int, geom, href: str) -> dict:
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "naip",
        "geometry": mapping(geom), "bbox": list(geom.bounds),
        "properties": {"datetime": f"{year}-07-01T00:00:00Z", "naip:year": str(year),
                       "gsd": 0.6},
        "links": [],
        "assets": {"image": {"href": href, "type": "image/tiff; application=geotiff"}},
    }


class StacServer:
    """A loopback STAC API (/, /search) that also serves files with HTTP range requests."""

    def __init__(self, root: Path):
        self.root = root
        self.items: list[dict] = []
        self.searches: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _json(self, obj, code=200):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _file(self, head: bool):
                p = outer.root / self.path.split("?")[0].removeprefix("/files/")
                if not p.is_file():
                    self.send_error(404)
                    return
                blob = p.read_bytes()
                rng = self.headers.get("Range")
                start, end = 0, len(blob) - 1
                if rng and rng.startswith("bytes="):
                    a, _, b = rng[6:].partition("-")
                    start, end = int(a), min(int(b) if b else len(blob) - 1, len(blob) - 1)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(blob)}")
                else:
                    self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "image/tiff")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                if not head:
                    self.wfile.write(blob[start:end + 1])

            def do_HEAD(self):
                self._file(head=True)

            def do_GET(self):
                if self.path.startswith("/files/"):
                    return self._file(head=False)
                if self.path.split("?")[0] in ("/", ""):
                    return self._json({
                        "type": "Catalog", "id": "loopback", "stac_version": "1.0.0",
                        "description": "test STAC API",
                        "conformsTo": [
                            "https://api.stacspec.org/v1.0.0/core",
                            "https://api.stacspec.org/v1.0.0/item-search",
                        ],
                        "links": [
                            {"rel": "self", "href": outer.url + "/", "type": "application/json"},
                            {"rel": "root", "href": outer.url + "/", "type": "application/json"},
                            {"rel": "search", "href": outer.url + "/search",
                             "type": "application/geo+json", "method": "POST"},
                        ],
                    })
                self.send_error(404)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.searches.append(body)
                want = shape(body["intersects"]) if "intersects" in body else None
                feats = [i for i in outer.items
                         if want is None or shape(i["geometry"]).intersects(want)]
                self._json({"type": "FeatureCollection", "features": feats, "links": []})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stac(tmp_path):
    fp = footprint(RECORD)
    files = tmp_path / "served"
    files.mkdir()
    _write_naip_like(files / "y2013.tif", fp, 300, 1.0, seed=1)
    _write_naip_like(files / "y2019.tif", fp, 300, 0.6, seed=2)
    server = StacServer(files)
    big = fp.polygon("EPSG:4326", 250)
    x0, y0, x1, y1 = fp.polygon("EPSG:4326").bounds
    sliver = box(x0 - 0.001, y0 - 0.001, (x0 + x1) / 2, y1 + 0.001)  # covers half the tile
    server.items = [
        _item("naip_2013", 2013, big, f"{server.url}/files/y2013.tif"),
        _item("naip_2019", 2019, big, f"{server.url}/files/y2019.tif?token=secret"),
        _item("naip_2019_edge", 2019, sliver, f"{server.url}/files/y2019.tif"),
    ]
    yield server
    server.close()


def test_footprint_matches_official_index(shared_data):
    """The footprint rebuilt from a record matches the shared footprints table."""
    import csv

    index = shared_data / "rsvqa_hr_index"
    images = {r["id"]: r for r in json.loads(
        (index / "USGS_split_test_images.json").read_text())["images"] if r.get("active")}
    with (index / "rsvqa_hr_image_footprints.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"][:50]
    for row in rows:
        x0, y0, x1, y1 = footprint(images[int(row["image_id"])]).bounds_3857
        assert x0 == pytest.approx(float(row["ul_x_3857"]), abs=0.01)
        assert y1 == pytest.approx(float(row["ul_y_3857"]), abs=0.01)
        assert x1 == pytest.approx(float(row["lr_x_3857_est"]), abs=0.05)
        assert y0 == pytest.approx(float(row["lr_y_3857_est"]), abs=0.05)


def test_fetch_writes_a_covering_chip_and_resumes(stac, tmp_path):
    chips = tmp_path / "chips"
    report = fetch([RECORD], chips, margin_m=30, year=2019, stac_url=stac.url, progress=False)
    assert report.fetched == [0] and not report.failed and not report.partial
    tif, side = chip_paths(chips, 0)
    meta = json.loads(side.read_text())
    assert meta["item_id"] == "naip_2019" and meta["year"] == 2019 and meta["covers"]
    assert meta["url"].endswith("/files/y2019.tif") and "secret" not in side.read_text()
    assert meta["margin_m"] == 30 and meta["footprint_3857"] == list(footprint(RECORD).bounds_3857)
    with rasterio.open(tif) as ds:
        assert ds.count == 4 and ds.crs.to_epsg() == 26918
        assert ds.res == pytest.approx((0.6, 0.6))  # native resolution kept
        assert list(ds.descriptions) == ["R", "G", "B", "NIR"]
        need = footprint(RECORD).polygon(ds.crs, 30)
        assert box(*ds.bounds).covers(need)
        assert box(*ds.bounds).area < need.area * 1.1  # a chip, not the whole asset
    # resume: the valid chip is skipped without asking the STAC API again
    n_search = len(stac.searches)
    again = fetch([RECORD], chips, margin_m=30, year=2019, stac_url=stac.url, progress=False)
    assert again.skipped == [0] and not again.fetched and len(stac.searches) == n_search
    # more context than cached -> fetched again
    more = fetch([RECORD], chips, margin_m=60, year=2019, stac_url=stac.url, progress=False)
    assert more.fetched == [0]


def test_year_choice(stac, tmp_path):
    fetch([RECORD], tmp_path, margin_m=10, year=2012, stac_url=stac.url, progress=False)
    assert json.loads(chip_paths(tmp_path, 0)[1].read_text())["item_id"] == "naip_2013"
    # default year: the record's date_added year (2020) -> 2019, the covering item
    assert naip.target_year(RECORD) == 2020
    fetch([RECORD], tmp_path / "b", margin_m=10, stac_url=stac.url, progress=False)
    assert json.loads(chip_paths(tmp_path / "b", 0)[1].read_text())["item_id"] == "naip_2019"


def test_unreachable_stac_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as s:  # a free port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(NaipError, match="cannot reach the STAC API"):
        fetch([RECORD], tmp_path, stac_url=url, timeout=5, progress=False)
    images = tmp_path / "USGS_split_x_images.json"
    images.write_text(json.dumps({"images": [RECORD]}))
    code = naip.main(["fetch", "--data", str(tmp_path), "--split", "x", "--chips",
                      str(tmp_path / "c"), "--stac-url", url, "--timeout", "5", "--quiet"])
    assert code == 2


def test_failed_image_does_not_stop_the_others(stac, tmp_path):
    far = dict(RECORD, id=7, upperleft_map_x=RECORD["upperleft_map_x"] + 50_000)
    report = fetch([far, RECORD], tmp_path, margin_m=10, year=2019, stac_url=stac.url,
                   progress=False)
    assert report.fetched == [0] and list(report.failed) == [7]
    assert "no NAIP item" in report.failed[7]


def test_open_naip_tile_footprint_is_the_roi(stac, tmp_path):
    fetch([RECORD], tmp_path, margin_m=40, year=2019, stac_url=stac.url, progress=False)
    fp = footprint(RECORD)
    side_m = 512 * 0.1524
    img0 = open_naip_tile(tmp_path, RECORD, context_m=0)
    img = open_naip_tile(tmp_path, RECORD, context_m=40)
    assert img.band_names == ["R", "G", "B", "NIR"] and img.crs.to_epsg() == 26918
    assert img.roi is not None and img0.roi is not None
    # the footprint's ground area, counted through the ROI, whatever the context
    for im in (img0, img):
        assert im.mask_area(im.answer_mask) == pytest.approx(side_m**2, rel=0.03)
    assert img.width > img0.width + 2 * 40 / 0.6 - 4  # context on both sides
    assert not img.roi[0].any() and not img.roi[:, 0].any()  # the border is context
    # the ROI centre is the footprint centre
    rows, cols = np.nonzero(img.roi)
    x, y = img.pixel_to_crs(cols.mean() + 0.5, rows.mean() + 0.5)
    cx, cy = fp.polygon(img.crs).centroid.coords[0]
    assert abs(x - cx) < 1 and abs(y - cy) < 1
    with pytest.raises(Exception, match="context"):
        open_naip_tile(tmp_path, RECORD, context_m=100)


def test_eval_with_naip_imagery(stac, tmp_path, shared_data):
    from eval.rsvqa import build_parser, evaluate

    chips = tmp_path / "chips"
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps(list(range(0, 12))))  # questions about mini image 0
    base = ["--data", str(shared_data / "rsvqa_hr_mini"), "--split", "mini", "--ids", str(ids),
            "--imagery", "naip", "--chips", str(chips), "--context-m", "20", "--quiet"]
    args = build_parser().parse_args([*base, "--out", str(tmp_path / "a")])
    with pytest.raises(SystemExit, match="python -m eval.naip fetch"):
        evaluate(args)  # offline and no chip: a clear error, nothing silently skipped
    fetch([RECORD], chips, margin_m=20, year=2019, stac_url=stac.url, progress=False)
    summary = evaluate(args)
    rows = [json.loads(x) for x in (tmp_path / "a" / "predictions.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in rows] == list(range(12))
    assert summary["error_rate"] <= 0.1 and summary["config"]["imagery"] == "naip"
