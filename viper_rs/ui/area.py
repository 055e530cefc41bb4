"""*Ask about this area* in the Region search tab: one question over the image folders'
sources inside an area (a typed W,S,E,N box or the map's current view), answered with
:func:`viper_rs.region.ask_region`, and shown as the answer, a table of chips and a map of
the chips (coloured by what each holds) and the regions.

Nothing here imports gradio.
"""

from __future__ import annotations

import html
import json
import math
import re
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from viper_rs.core.errors import InputError
from viper_rs.core.textsafe import safe_text
from viper_rs.ui.answer_map import colour_for
from viper_rs.ui.leaflet import leaflet_assets

if TYPE_CHECKING:  # the region package loads shapely: imported where an area is asked
    from viper_rs.core.image import Image
    from viper_rs.core.regions import Region
    from viper_rs.region.image import RegionImage

#: Chip core side (m) of the app's area questions.
AREA_CHIP_M = 256.0
#: Most chips one area question may cover (larger areas are refused with a message).
MAX_AREA_CHIPS = 400
#: Columns of the chips table.
CHIP_COLUMNS = ["chip", "source", "status", "objects", "area (m2)", "ms"]
#: What the maps post to the page holding them when their view changes.
VIEW_TYPE = "viper-rs-view"
#: Height of the area map (px).
AREA_MAP_HEIGHT = 520
#: Most region polygons drawn on the area map (the downloads hold them all).
MAX_AREA_POLYGONS = 2000
#: Most bytes of imagery (PNG) the area map inlines.
MAX_AREA_IMAGERY_BYTES = 6_000_000
#: Shown in the area map's place before the first area question.
EMPTY_AREA_MAP = ('<div id="area-map-empty" style="padding:2em;text-align:center;opacity:.7">'
                  "Ask about an area: its chips (coloured by what each holds) and the regions "
                  "found are drawn here.</div>")
#: Chip colour ramp (few to many objects) and the colours of chips without a value.
_RAMP = ("#ffffcc", "#fed976", "#fd8d3c", "#e31a1c", "#800026")
_FAILED, _SKIPPED = "#7f7f7f", "#bdbdbd"
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass
class AreaView:
    """Everything the tab shows for one area question (or a message on failure)."""

    message: str
    answer: Any = None
    report: Any = None
    rows: list[list] = field(default_factory=list)
    map_html: str = EMPTY_AREA_MAP
    geojson: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)
    bbox: list[float] | None = None
    #: What the area map draws (:func:`area_map_data`); None without a map.
    map_data: dict[str, Any] | None = None
    #: The id the area map tags its posted views with ("" without a map).
    map_id: str = ""

    @property
    def ok(self) -> bool:
        """True when the question was answered."""
        return self.answer is not None and self.answer.error is None


def parse_area(text: str | Sequence[float] | None) -> list[float] | None:
    """A W,S,E,N box in degrees from ``text`` (commas or spaces, or four numbers); None when
    blank. InputError when it is not four numbers forming a box on the globe."""
    if text is None:
        return None
    if isinstance(text, str):
        if not text.strip():
            return None
        parts = _NUMBER.findall(text)
        if len(parts) != 4 or _NUMBER.sub("", text).strip(" ,;[]()\t"):
            raise InputError(f"the area must be four numbers W,S,E,N in degrees, got "
                             f"{text.strip()[:60]!r}")
        values = [float(p) for p in parts]
    else:
        values = [float(v) for v in text]
        if len(values) != 4:
            raise InputError("the area must be four numbers W,S,E,N in degrees")
    w, s, e, n = values
    if not all(math.isfinite(v) for v in values):
        raise InputError("the area's numbers must be finite")
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise InputError(f"the area W,S,E,N = {w:g},{s:g},{e:g},{n:g} is not a box on the "
                         "globe (W < E within -180..180, S < N within -90..90)")
    return values


def chip_estimate(image: RegionImage, chip_m: float) -> int:
    """How many chips of ``chip_m`` metres cover ``image`` (a RegionImage)."""
    side = float(image.grid.pixel_size)
    rows = max(1, math.ceil(image.height * side / chip_m))
    cols = max(1, math.ceil(image.width * side / chip_m))
    return rows * cols


def region_lonlats(image: Image, regions: Sequence[Region]) -> list[tuple[float, float]]:
    """WGS84 (lon, lat) of each region's centroid."""
    if not regions:
        return []
    from rasterio.warp import transform as warp

    xy = [image.pixel_to_crs(*r.centroid) for r in regions]
    lons, lats = warp(image.crs, "EPSG:4326", [p[0] for p in xy], [p[1] for p in xy])
    return [(float(x), float(y)) for x, y in zip(lons, lats, strict=True)]


def chip_values(chips: Sequence[dict], regions: Sequence[Any],
                centres: Sequence[tuple[float, float]]) -> list[dict[str, float]]:
    """Per chip (same order): the regions whose centroid is in its core (each region in one
    chip, the first holding it) and their area (m2)."""
    out = [{"objects": 0, "area_m2": 0.0} for _ in chips]
    for region, (lon, lat) in zip(regions, centres, strict=True):
        for i, chip in enumerate(chips):
            w, s, e, n = chip["footprint_wgs84"]
            if w <= lon <= e and s <= lat <= n:
                out[i]["objects"] += 1
                out[i]["area_m2"] += float(region.area_m2)
                break
    return out


def chip_table(chips: Sequence[dict], values: Sequence[dict]) -> list[list]:
    """Rows of the chips table (:data:`CHIP_COLUMNS`)."""
    rows = []
    for chip, v in zip(chips, values, strict=True):
        names = list(chip.get("sources") or [])
        source = (safe_text(names[0]) + (f" +{len(names) - 1}" if len(names) > 1 else "")
                  if names else "")
        status = chip["status"] + (f": {chip['reason']}" if chip.get("reason")
                                   and chip["status"] == "failed" else "")
        ok = chip["status"] == "ok"
        rows.append([chip["id"], source, status, v["objects"] if ok else None,
                     round(v["area_m2"], 1) if ok else None, round(float(chip["ms"]), 1)])
    return rows


def area_geojson(chips: Sequence[dict], values: Sequence[dict], regions_fc: dict[str, Any],
                 question: str, answer: str) -> dict[str, Any]:
    """One FeatureCollection (RFC 7946, WGS84): the regions (``kind: region``) and the chips'
    footprints with their status and values (``kind: chip``)."""
    features = [{**f, "id": f"region-{f.get('id')}",
                 "properties": {**f.get("properties", {}), "kind": "region"}}
                for f in regions_fc.get("features", [])]
    for chip, v in zip(chips, values, strict=True):
        w, s, e, n = chip["footprint_wgs84"]
        features.append({
            "type": "Feature", "id": f"chip-{chip['id']}",
            "geometry": {"type": "Polygon",
                         "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
            "properties": {"kind": "chip", "chip": chip["id"], "status": chip["status"],
                           "sources": list(chip.get("sources") or []),
                           "objects": v["objects"], "area_m2": round(v["area_m2"], 3),
                           "ms": chip["ms"], "question": question, "answer": answer},
        })
    return {"type": "FeatureCollection", "features": features}


def ramp_colour(value: float, top: float) -> str:
    """The chip colour of ``value`` on a ramp up to ``top`` (0: the palest)."""
    if top <= 0 or value <= 0:
        return _RAMP[0]
    k = 1 + min(int(math.ceil(value / top * (len(_RAMP) - 1))) - 1, len(_RAMP) - 2)
    return _RAMP[max(k, 1)]


def area_map_data(chips: Sequence[dict], values: Sequence[dict], regions_fc: dict[str, Any],
                  bbox: Sequence[float], by: str = "objects") -> dict[str, Any]:
    """What the area map draws: chip rectangles (colour by ``by``), region polygons
    (colour by class), and the area's bounds."""
    top = max((v[by] for c, v in zip(chips, values, strict=True) if c["status"] == "ok"),
              default=0)
    cells = []
    for chip, v in zip(chips, values, strict=True):
        colour = (ramp_colour(v[by], top) if chip["status"] == "ok"
                  else _FAILED if chip["status"] == "failed" else _SKIPPED)
        w, s, e, n = chip["footprint_wgs84"]
        unit = "objects" if by == "objects" else "m2"
        value = f"{v[by]:g} {unit}" if chip["status"] == "ok" else chip["status"]
        cells.append({"b": [[s, w], [n, e]], "c": colour,
                      "t": f"{chip['id']} · {value}", "s": chip["status"]})
    polys = []
    for f in regions_fc.get("features", [])[:MAX_AREA_POLYGONS]:
        props = f.get("properties", {})
        label = str(props.get("label") or props.get("query") or "")
        geom = f["geometry"]
        parts = geom["coordinates"] if geom["type"] == "MultiPolygon" else [geom["coordinates"]]
        rings = [[[[round(y, 7), round(x, 7)] for x, y in ring] for ring in part]
                 for part in parts]
        area = props.get("area_m2")
        tip = f"{label} #{f.get('id')}" + (f" · {float(area):,.0f} m2" if area is not None else "")
        polys.append({"r": rings, "c": colour_for(label), "t": tip})
    legend = [[f"0 {by}", _RAMP[0]], [f"{top:g} {by}" if top else "most", _RAMP[-1]]]
    classes = {p["t"].split(" #")[0]: p["c"] for p in polys}
    w, s, e, n = bbox
    if cells:  # the chips (the area where it meets the sources)
        s = max(s, min(c["b"][0][0] for c in cells))
        w = max(w, min(c["b"][0][1] for c in cells))
        n = min(n, max(c["b"][1][0] for c in cells))
        e = min(e, max(c["b"][1][1] for c in cells))
    return {"cells": cells, "polys": polys, "bounds": [[s, w], [n, e]], "legend": legend,
            "classes": classes}


def area_map_document(data: dict[str, Any], imagery: Sequence[Any] = (),
                      map_id: str = "") -> str:
    """A self-contained Leaflet page (no CDN) of ``data`` (:func:`area_map_data`) over the
    sources' pictures (``imagery``) and an OpenStreetMap background; from its first fit on
    it posts its view (tagged ``map_id``) to the page holding it whenever it moves."""
    js, css = leaflet_assets()
    pictures = [{"u": ov.data_uri(), "b": [[ov.bounds[1], ov.bounds[0]],
                                             [ov.bounds[3], ov.bounds[2]]]} for ov in imagery]
    payload = json.dumps({**data, "pictures": pictures}).replace("</", "<\\/")
    script = view_post_js().replace("</", "<\\/")
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<style>{css}</style><script>{js}</script>
<style>html,body,#map{{height:100%;margin:0}}
.viper-legend{{background:rgba(255,255,255,.92);padding:6px 8px;border-radius:5px;
font:12px sans-serif;box-shadow:0 1px 5px rgba(0,0,0,.4)}}
.viper-legend i{{display:inline-block;width:12px;height:12px;margin-right:4px;
vertical-align:middle;border:1px solid #555}}</style></head>
<body><div id="map"></div><script>{script}
(function () {{
  const d = {payload};
  const map = L.map('map', {{preferCanvas: false}});
  window.viperMap = map;
  L.tileLayer('https://tile.openstreetmap.org/{{z}}/{{x}}/{{y}}.png', {{maxZoom: 19,
    attribution: '&copy; OpenStreetMap contributors'}}).addTo(map);
  d.pictures.forEach(p => L.imageOverlay(p.u, p.b, {{interactive: false}}).addTo(map));
  const chips = L.layerGroup().addTo(map), regions = L.layerGroup().addTo(map);
  d.cells.forEach(c => L.rectangle(c.b, {{color: c.s === 'failed' ? '#d7191c' : '#333333',
    weight: 1, fillColor: c.c, fillOpacity: 0.45, className: 'viper-chip',
    dashArray: c.s === 'ok' ? null : '4 4'}}).bindTooltip(c.t).addTo(chips));
  d.polys.forEach(p => L.polygon(p.r, {{color: p.c, weight: 2, fillColor: p.c,
    fillOpacity: 0.55, className: 'viper-area-region'}}).bindTooltip(p.t).addTo(regions));
  L.control.layers(null, {{'Chips': chips, 'Regions': regions}},
    {{collapsed: false}}).addTo(map);
  const Legend = L.Control.extend({{options: {{position: 'bottomleft'}},
    onAdd: function () {{ const div = L.DomUtil.create('div', 'viper-legend');
      const esc = t => String(t).replace(/[&<>"]/g, ch => '&#' + ch.charCodeAt(0) + ';');
      let h = '<b>Chips</b><br>' + d.legend.map(l => '<i style="background:' + l[1] + '"></i>'
        + esc(l[0])).join('<br>');
      const cls = Object.entries(d.classes);
      if (cls.length) h += '<br><b>Regions</b><br>' + cls.map(([k, c]) =>
        '<i style="background:' + c + '"></i>' + esc(k)).join('<br>');
      div.innerHTML = h; return div; }} }});
  new Legend().addTo(map);
  const view = viperWatchView(map, {json.dumps(map_id)});
  let shown = false;
  const fit = () => {{ map.invalidateSize(); const s = map.getSize();
    const visible = s.x > 0 && s.y > 0;
    if (visible && !shown) {{ view.start();
      map.fitBounds(d.bounds, {{padding: [20, 20], maxZoom: 18, animate: false}}); }}
    shown = visible; }};
  map.fitBounds(d.bounds);
  fit();
  new ResizeObserver(fit).observe(map.getContainer());
  // A frame out of sight may get no resize callbacks until it is scrolled to: ask too.
  const poll = setInterval(() => {{ if (shown) clearInterval(poll); else fit(); }}, 250);
}})();
</script></body></html>"""


def area_map_html(data: dict[str, Any], imagery: Sequence[Any] = (),
                  height: int = AREA_MAP_HEIGHT, map_id: str = "") -> str:
    """The area map as a sandboxed ``<iframe srcdoc=...>`` for the app."""
    doc = html.escape(area_map_document(data, imagery, map_id), quote=True)
    return (f'<iframe class="viper-area-map" title="Area answer map" sandbox="allow-scripts" '
            f'srcdoc="{doc}" style="width:100%;height:{int(height)}px;border:0;'
            'border-radius:6px"></iframe>')


def area_imagery(overlays: dict[str, Any], bbox: Sequence[float],
                 max_bytes: int = MAX_AREA_IMAGERY_BYTES) -> list[Any]:
    """The sources' pictures that meet ``bbox`` (W,S,E,N), within ``max_bytes``."""
    w, s, e, n = bbox
    chosen, total = [], 0
    for ov in overlays.values():
        a = ov.bounds
        if a[0] <= e and a[2] >= w and a[1] <= n and a[3] >= s:
            if chosen and total + ov.bytes > max_bytes:
                continue
            chosen.append(ov)
            total += ov.bytes
    return chosen


def new_map_id() -> str:
    """A fresh id for a map the app shows (its posted views carry it)."""
    return secrets.token_hex(8)


def view_post_js() -> str:
    """JavaScript defining ``viperWatchView(map, id)``: once its ``start()`` has been called
    (just before the map's first fit), every move of ``map`` posts the view to the page
    holding the map, as ``{type: VIEW_TYPE, map: id, seq, bounds: [W, S, E, N]}`` with
    ``seq`` counting the map's posts: the views before the fit (the initial whole-world
    one) are never posted, and the page can tell a late post from a newer one."""
    return ("function viperWatchView(map, id) {\n"
            "  let seq = 0, started = false;\n"
            "  const post = () => { if (!started) return; const z = map.getSize();\n"
            "    if (!z.x || !z.y) return; const b = map.getBounds();\n"
            f"    parent.postMessage({{type: {json.dumps(VIEW_TYPE)}, map: id, seq: ++seq,\n"
            "      bounds: [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]}, '*'); };\n"
            "  map.on('moveend', post);\n"
            "  return {start: () => { started = true; }, post: post};\n"
            "}\n")


#: The app's listener for the area map's view (gr.HTML js_on_load): a view posted by its
#: own iframe fires the component's select event with the bounds, the map's id and the
#: post's number.
VIEW_LISTENER = (
    "if (!element.__viperView) {"
    " element.__viperView = true;"
    " window.addEventListener('message', (event) => {"
    "  const frame = element.querySelector('iframe');"
    "  const data = event.data || {};"
    f"  if (!frame || event.source !== frame.contentWindow || data.type !== "
    f"{json.dumps(VIEW_TYPE)}) return;"
    "  trigger('select', {view: data.bounds, map: data.map, seq: data.seq});"
    " });"
    "}"
)


class ViewTracker:
    """What the *Map's current view* field shows in one browser session: the last view
    posted by a map that is still shown (the Region search map or the area map), or ""
    when no shown map has posted one. A post from a map no longer shown, or older than one
    already seen from the same map (posts may be handled out of order), is ignored."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shown: dict[str, str] = {}  # slot ("search", "area") -> id of the map shown
        self._views: dict[str, tuple[int, str]] = {}  # map id -> (post number, view text)

    def show(self, slot: str, map_id: str | None) -> str:
        """Map ``map_id`` (None or "": no map) now fills ``slot``; the field's new text."""
        with self._lock:
            old = self._shown.pop(slot, None)
            if old is not None and old != map_id:
                self._views.pop(old, None)
            if map_id:
                self._shown[slot] = map_id
            return self._text()

    def post(self, map_id: Any, seq: Any, bounds: Any) -> str | None:
        """A view posted by map ``map_id`` (its ``seq``-th post): the field's new text, or
        None when the post is to be ignored (stale, from a map not shown, not a box)."""
        text = view_text(bounds)
        if not text or not isinstance(map_id, str):
            return None
        try:
            number = int(seq)
        except (TypeError, ValueError):
            return None
        with self._lock:
            if map_id not in self._shown.values():
                return None
            last = self._views.get(map_id)
            if last is not None and last[0] >= number:
                return None
            self._views.pop(map_id, None)
            self._views[map_id] = (number, text)  # the newest post is the last entry
            return self._text()

    @property
    def text(self) -> str:
        """The view the field shows ("" when no shown map has posted one)."""
        with self._lock:
            return self._text()

    def _text(self) -> str:
        shown = set(self._shown.values())
        for map_id in reversed(list(self._views)):
            if map_id in shown:
                return self._views[map_id][1]
        return ""


def view_text(bounds: Any) -> str:
    """A posted view ([W, S, E, N]) as the text of the view field ("" when not a box)."""
    try:
        values = [float(v) for v in bounds]
    except (TypeError, ValueError):
        return ""
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        return ""
    w, s, e, n = values
    w, e = max(w, -180.0), min(e, 180.0)
    s, n = max(s, -90.0), min(n, 90.0)
    if not (w < e and s < n):
        return ""
    return ",".join(f"{v:.6f}" for v in (w, s, e, n))
