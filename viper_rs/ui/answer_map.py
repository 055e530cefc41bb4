"""The Chat tab's answer map: the image with the answer's regions as vector polygons on a
self-contained Leaflet page (Leaflet inlined, no CDN, no tiles).

Georeferenced images are placed by their WGS84 bounds (Web Mercator map); images without
a CRS are shown on a flat map in metres from their GSD (pixels without one). One layer
per query, one colour per class (:func:`colour_for`, shared with the chat's overlay), a
popup per polygon, an opacity slider, a fullscreen button, and a message listener that
highlights a region when the app posts ``{type: "viper-highlight", id}`` into the frame.

Nothing here imports gradio.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import zlib
from functools import lru_cache
from typing import Any

import numpy as np

from viper_rs.core.classes import CONCEPT_CLASSES
from viper_rs.core.geo import GeoImage

#: Most polygons drawn on one map (the largest are kept; the table lists them all).
MAX_MAP_POLYGONS = 500
#: Height of the map frame in the app, in pixels.
ANSWER_MAP_HEIGHT = 520
#: Message the app posts into the map frame to highlight a region.
HIGHLIGHT_TYPE = "viper-highlight"
#: Message the map frame posts to the app to go fullscreen (or back).
FULLSCREEN_TYPE = "viper-answer-fullscreen"

#: Colour of each canonical class (:func:`viper_rs.vision.concepts.resolve_concept`).
CLASS_COLOURS: dict[str, str] = {c.name: c.colour for c in CONCEPT_CLASSES}
#: Words tried when a label is no known concept (dataset classes such as "car").
_KEYWORDS: tuple[tuple[str, str], ...] = tuple(
    (word, c.name) for c in CONCEPT_CLASSES for word in c.keywords
)
#: Colours of anything else, picked by a stable hash of the label.
_OTHER_COLOURS = ("#6a3d9a", "#e7298a", "#17becf", "#ffd92f", "#8c564b", "#00e5ff",
                  "#bcbd22", "#ff69b4")
_COUNT = re.compile(r"\s*\(\d+\)\s*$")

EMPTY_ANSWER_MAP = (
    '<div id="answer-map-empty" style="padding:2em;text-align:center;opacity:.7">'
    "Ask a question: the answer's regions are drawn here on the image, one layer per "
    "query. Click a row of the Regions table to find its region.</div>"
)


@lru_cache(maxsize=256)
def colour_for(label_or_query: str) -> str:
    """The ``#rrggbb`` colour of a class, query or overlay label (``"water (3)"``): the same
    class always gets the same colour (water blue, trees green, buildings red, roads
    grey...)."""
    text = _COUNT.sub("", str(label_or_query or "")).strip().lower()
    try:
        from viper_rs.vision.concepts import resolve_concept

        cls, _ = resolve_concept(text)
        if cls in CLASS_COLOURS:
            return CLASS_COLOURS[cls]
    except Exception:  # noqa: BLE001 - any unknown phrase falls through to the keywords
        pass
    words = text.replace("_", " ").replace("-", " ")
    for word, cls in _KEYWORDS:
        if word in words:
            return CLASS_COLOURS[cls]
    return _OTHER_COLOURS[zlib.crc32(words.encode("utf-8")) % len(_OTHER_COLOURS)]


def colour_rgb(label_or_query: str) -> tuple[int, int, int]:
    """:func:`colour_for` as an (r, g, b) tuple of 0-255 integers."""
    c = colour_for(label_or_query)
    return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)


def picture_data_url(picture: np.ndarray) -> str:
    """An 8-bit RGB array as a ``data:image/png;base64,...`` URL."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(picture[..., :3], dtype=np.uint8)).save(
        buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------------------- geometry
def _pixel_size(image: GeoImage) -> float:
    t = image.transform
    return float(np.sqrt(abs(t.a * t.e - t.b * t.d))) or 1.0


def map_data(image: GeoImage, answer: Any, picture: np.ndarray,
             max_polygons: int = MAX_MAP_POLYGONS) -> dict[str, Any]:
    """What the map page draws, as plain JSON-ready data: ``crs`` (``"wgs84"`` or
    ``"simple"``), image ``bounds`` ([[south, west], [north, east]]), ``unit``, ``queries``
    with their ``colours``, and ``regions`` (id, query index, label, area, score, rings as
    flat [lat, lng, ...] lists, simplified to about one display pixel). At most
    ``max_polygons`` regions (the largest) are kept; ``omitted`` counts the rest and
    ``no_outline`` those without a polygon."""
    import shapely
    from shapely import affinity

    h, w = image.shape
    display_px = max(h, w) / max(1, max(picture.shape[:2]))  # image px per display px
    regions = list(answer.regions) if answer is not None else []
    queries: list[str] = []
    for r in regions:
        q = str(r.query or r.label or "region")
        if q not in queries:
            queries.append(q)
    drawable = [r for r in regions if r.polygon is not None and not r.polygon.is_empty]
    no_outline = len(regions) - len(drawable)
    omitted = 0
    if len(drawable) > max_polygons:
        keep = set(np.argsort([-float(r.area_m2) for r in drawable],
                              kind="stable")[:max_polygons].tolist())
        omitted = len(drawable) - max_polygons
        drawable = [r for i, r in enumerate(drawable) if i in keep]
    geoms = np.array([r.polygon for r in drawable], dtype=object)
    if image.crs is not None:
        from pyproj import Transformer

        tol = _pixel_size(image) * display_px
        simple = _simplified(geoms, tol)
        to_wgs = Transformer.from_crs(image.crs, "EPSG:4326", always_xy=True)
        if len(simple):
            simple = shapely.transform(simple, lambda xy: np.column_stack(
                to_wgs.transform(xy[:, 0], xy[:, 1])))
        cols = np.array([0, w, 0, w], dtype=float)
        rows = np.array([0, 0, h, h], dtype=float)
        xs, ys = image.transform @ (cols, rows)
        lons, lats = to_wgs.transform(np.asarray(xs), np.asarray(ys))
        bounds = [[float(np.min(lats)), float(np.min(lons))],
                  [float(np.max(lats)), float(np.max(lons))]]
        crs, digits = "wgs84", 7
    else:
        gsd = float(image.gsd) if image.gsd else 1.0
        inv = ~image.transform  # image coordinates -> pixels
        simple = np.array([affinity.affine_transform(g, [inv.a, inv.b, inv.d, inv.e,
                                                         inv.c, inv.f]) for g in geoms],
                          dtype=object)
        simple = _simplified(simple, display_px)
        # pixels -> metres east (x) and north (y) of the image's bottom-left corner
        simple = np.array([affinity.affine_transform(g, [gsd, 0, 0, -gsd, 0, h * gsd])
                           for g in simple], dtype=object)
        bounds = [[0.0, 0.0], [h * gsd, w * gsd]]
        crs, digits = "simple", 2
    out_regions = []
    for region, geom in zip(drawable, simple, strict=True):
        rings = _rings(geom, digits)
        if not rings:
            no_outline += 1
            continue
        out_regions.append({
            "id": int(region.id),
            "q": queries.index(str(region.query or region.label or "region")),
            "label": str(region.label),
            "area": round(float(region.area_m2), 1),
            "score": round(float(region.score), 3),
            "rings": rings,
        })
    return {
        "crs": crs, "bounds": bounds, "unit": image.area_unit,
        "queries": queries, "colours": [colour_for(q) for q in queries],
        "counts": [sum(1 for r in regions if str(r.query or r.label or "region") == q)
                   for q in queries],
        "regions": out_regions, "omitted": omitted, "no_outline": no_outline,
    }


def _simplified(geoms: np.ndarray, tolerance: float) -> np.ndarray:
    """Each geometry without holes smaller than about 2 x 2 ``tolerance`` and simplified
    by ``tolerance``, or kept when that would empty it."""
    import shapely

    if not len(geoms):
        return geoms
    filled = np.array([_without_small_holes(g, 4 * tolerance * tolerance) for g in geoms],
                      dtype=object)
    simple = shapely.simplify(filled, tolerance, preserve_topology=True)
    empty = shapely.is_empty(simple) | (shapely.area(simple) <= 0)
    simple[empty] = geoms[empty]
    return simple


def _without_small_holes(geom: Any, min_area: float) -> Any:
    from shapely.geometry import MultiPolygon, Polygon

    def fill(poly: Any) -> Any:
        if poly.geom_type != "Polygon" or not poly.interiors:
            return poly
        holes = [r for r in poly.interiors if Polygon(r).area >= min_area]
        return poly if len(holes) == len(poly.interiors) else Polygon(poly.exterior, holes)

    if geom.geom_type == "MultiPolygon":
        return MultiPolygon([fill(p) for p in geom.geoms])
    return fill(geom)


def _rings(geom: Any, digits: int) -> list[list[list[float]]]:
    """Leaflet polygon parts: per polygon, its rings as flat [lat, lng, lat, lng, ...]."""
    parts = []
    polys = getattr(geom, "geoms", [geom])
    for poly in polys:
        if poly.geom_type != "Polygon" or poly.is_empty:
            continue
        rings = []
        for ring in (poly.exterior, *poly.interiors):
            xy = np.asarray(ring.coords)[:-1]
            if len(xy) < 3:
                continue
            latlng = np.round(xy[:, ::-1], digits).ravel()
            rings.append([float(v) for v in latlng])
        if rings:
            parts.append(rings)
    return parts


# ---------------------------------------------------------------------------- page
def map_document(image: GeoImage, answer: Any, picture: np.ndarray,
                 max_polygons: int = MAX_MAP_POLYGONS) -> str:
    """A self-contained HTML page: ``picture`` (the image's display RGB) placed on the map
    with the answer's regions over it (see the module docstring)."""
    from viper_rs.ui.leaflet import leaflet_assets

    data = map_data(image, answer, picture, max_polygons)
    data["picture"] = picture_data_url(picture)
    js, css = leaflet_assets()
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<style>{css}</style><script>{js}</script>{_STYLE}</head>"
            f'<body><div id="map"></div><script>const VIPER = {payload};\n{_SCRIPT}'
            "</script></body></html>")


def map_html(image: GeoImage, answer: Any, picture: np.ndarray,
             height: int = ANSWER_MAP_HEIGHT, max_polygons: int = MAX_MAP_POLYGONS) -> str:
    """The map as an ``<iframe srcdoc=...>`` for the app (sandboxed: its scripts cannot
    reach the app's page, only post messages to it)."""
    doc = html.escape(map_document(image, answer, picture, max_polygons), quote=True)
    return (f'<iframe class="viper-answer-map" title="Answer map" '
            f'sandbox="allow-scripts" srcdoc="{doc}" '
            f'style="width:100%;height:{int(height)}px;border:0;border-radius:6px"></iframe>')


_STYLE = """<style>
html, body, #map { height: 100%; margin: 0; }
#map { background: #2b2b2b; }
.viper-box { background: rgba(255,255,255,.92); padding: 4px 8px; border-radius: 5px;
  font: 12px sans-serif; box-shadow: 0 1px 5px rgba(0,0,0,.4); }
.viper-box input { vertical-align: middle; width: 90px; }
.viper-swatch { display: inline-block; width: 12px; height: 12px; margin-right: 4px;
  vertical-align: -2px; border: 2px solid; border-radius: 2px; }
.viper-full-button { width: 30px; height: 30px; font: bold 18px/30px sans-serif;
  text-align: center; cursor: pointer; background: #fff; display: block; color: #000;
  text-decoration: none; }
path.viper-highlight { filter: drop-shadow(0 0 3px #fff); }
</style>"""

#: The map page's script (``VIPER`` holds :func:`map_data` plus ``picture``).
_SCRIPT = """(function () {
  const D = VIPER, flat = D.crs === 'simple';
  const map = L.map('map', {crs: flat ? L.CRS.Simple : L.CRS.EPSG3857, zoomSnap: 0.25,
    minZoom: flat ? -8 : 1, maxZoom: flat ? 8 : 23, attributionControl: false});
  L.imageOverlay(D.picture, D.bounds, {interactive: false}).addTo(map);
  const esc = s => String(s).replace(/[&<>"']/g, c => ({'&': '&amp;', '<': '&lt;',
    '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));
  const unit = D.unit === 'm2' ? 'm²' : 'px';
  let fill = 0.35, current = [];
  const style = q => ({color: D.colours[q], weight: 2, opacity: 0.95, fillColor: D.colours[q],
    fillOpacity: fill});
  const groups = D.queries.map(() => L.featureGroup().addTo(map));
  const byId = {}, all = [];
  D.regions.forEach(r => {
    const latlngs = r.rings.map(part => part.map(ring => {
      const out = [];
      for (let i = 0; i < ring.length; i += 2) out.push([ring[i], ring[i + 1]]);
      return out; }));
    const layer = L.polygon(latlngs, style(r.q));
    layer.viper = r;
    layer.bindPopup('<b>' + esc(D.queries[r.q]) + '</b> #' + r.id + '<br>label: ' +
      esc(r.label) + '<br>area: ' + r.area.toLocaleString() + ' ' + unit + '<br>score: ' +
      r.score);
    groups[r.q].addLayer(layer);
    (byId[r.id] = byId[r.id] || []).push(layer);
    all.push(layer);
    layer.on('add', () => layer._path && layer._path.setAttribute('data-id', r.id));
    if (layer._path) layer._path.setAttribute('data-id', r.id);
  });
  const overlays = {};
  D.queries.forEach((q, i) => {
    overlays['<span class="viper-swatch" style="border-color:' + D.colours[i] +
      ';background:' + D.colours[i] + '80"></span>' + esc(q) + ' (' + D.counts[i] + ')'] =
      groups[i];
  });
  if (D.queries.length) L.control.layers(null, overlays, {collapsed: false}).addTo(map);
  const Box = L.Control.extend({ onAdd: function () {
    const div = L.DomUtil.create('div', 'viper-box ' + (this.options.className || ''));
    div.innerHTML = this.options.html;
    L.DomEvent.disableClickPropagation(div);
    L.DomEvent.disableScrollPropagation(div);
    return div; } });
  if (all.length) {
    const box = new Box({position: 'bottomright', className: 'viper-opacity',
      html: 'fill <input type="range" min="0" max="1" step="0.05" value="' + fill + '">'});
    box.addTo(map);
    box.getContainer().querySelector('input').addEventListener('input', e => {
      fill = Number(e.target.value);
      all.forEach(l => l.setStyle({fillOpacity: current.includes(l) ? Math.min(1, fill + 0.35)
                                                                    : fill})); });
  }
  const notes = [];
  if (D.omitted) notes.push(D.omitted + ' smaller regions not drawn (' + all.length +
    ' largest shown); the table and the downloads have them all');
  if (D.no_outline) notes.push(D.no_outline + ' regions without an outline');
  if (notes.length) new Box({position: 'bottomleft', className: 'viper-note',
                             html: notes.map(esc).join('<br>')}).addTo(map);
  // Fullscreen: the page holding the frame makes the frame cover the window.
  let full = false, refit = false;
  window.addEventListener('resize', () => { map.invalidateSize();
    if (refit && map.getSize().x > 0) { refit = false; map.fitBounds(current.length ?
      L.featureGroup(current).getBounds() : target, {padding: [20, 20]}); } });
  const setFull = on => { full = on; refit = true;
    document.body.classList.toggle('viper-full', on);
    parent.postMessage({type: '""" + FULLSCREEN_TYPE + """', on: on}, '*'); };
  const Full = L.Control.extend({ options: {position: 'topleft'}, onAdd: function () {
    const div = L.DomUtil.create('div', 'leaflet-bar');
    const a = L.DomUtil.create('a', 'viper-full-button', div);
    a.href = '#'; a.title = 'Fullscreen (Esc to leave)'; a.setAttribute('role', 'button');
    a.innerHTML = '<svg width="16" height="16" viewBox="0 0 16 16" fill="none" ' +
      'stroke="#333" stroke-width="2" style="vertical-align:-3px"><path d="M1 6V1h5M10 1h5v5' +
      'M15 10v5h-5M6 15H1v-5"/></svg>';
    L.DomEvent.on(a, 'click', e => { L.DomEvent.preventDefault(e); setFull(!full); });
    L.DomEvent.disableClickPropagation(div);
    return div; } });
  new Full().addTo(map);
  document.addEventListener('keydown', e => { if (e.key === 'Escape' && full) setFull(false); });
  // Zoom to the regions whenever the frame gets a size after having none.
  const target = all.length ? L.featureGroup(all).getBounds() : L.latLngBounds(D.bounds);
  // (A frame off screen may get no resize callbacks: a timer checks too, until shown.)
  let shown = false;
  const fit = () => { map.invalidateSize(); const s = map.getSize();
    const visible = s.x > 0 && s.y > 0;
    if (visible && !shown) map.fitBounds(target, {padding: [20, 20]});
    shown = visible; };
  map.fitBounds(target);  // a view from the start, so layers are drawn even before a fit
  new ResizeObserver(fit).observe(map.getContainer());
  fit();
  const poll = setInterval(() => { fit(); if (shown) clearInterval(poll); }, 250);
  function highlight(id) {
    current.forEach(l => { l.setStyle(style(l.viper.q));
      if (l._path) l._path.classList.remove('viper-highlight'); });
    current = byId[id] || [];
    current.forEach(l => {
      const g = groups[l.viper.q];
      if (!map.hasLayer(g)) g.addTo(map);
      l.setStyle({weight: 5, color: '#ffff00', fillOpacity: Math.min(1, fill + 0.35)});
      l.bringToFront();
      if (l._path) l._path.classList.add('viper-highlight');
    });
    if (current.length) {
      const b = L.featureGroup(current).getBounds();
      map.fitBounds(b, {padding: [60, 60], maxZoom: Math.max(map.getBoundsZoom(target),
                                                               flat ? 2 : 19)});
      current[0].openPopup();
    }
  }
  window.viperHighlight = highlight;
  window.addEventListener('message', e => {
    const d = e.data || {};
    if (e.source === parent && d.type === '""" + HIGHLIGHT_TYPE + """') highlight(Number(d.id));
  });
})();"""

#: The app's side (gr.HTML ``js_on_load``): make the map frame cover the window when the
#: map asks for fullscreen (and back), accepting messages from its own frame only.
FULLSCREEN_LISTENER = (
    "if (!element.__viperFull) {"
    " element.__viperFull = true;"
    " const full = 'position:fixed;left:0;top:0;width:100vw;height:100vh;z-index:10000;"
    "border:0;border-radius:0;background:#2b2b2b';"
    " window.addEventListener('message', (event) => {"
    "  const frame = element.querySelector('iframe');"
    "  const data = event.data || {};"
    f"  if (!frame || event.source !== frame.contentWindow || data.type !== "
    f"{json.dumps(FULLSCREEN_TYPE)}) return;"
    "  if (data.on) { if (frame.dataset.style === undefined) frame.dataset.style ="
    " frame.getAttribute('style') || ''; frame.setAttribute('style', full); }"
    "  else if (frame.dataset.style !== undefined) {"
    " frame.setAttribute('style', frame.dataset.style); delete frame.dataset.style; }"
    " });"
    "}"
)

#: Client-side handler (``js=``) run after a Regions table row is picked: posts the
#: region id (the event's input) into the answer map's frame.
HIGHLIGHT_JS = (
    "(id) => { const frame = document.querySelector('#answer-map iframe');"
    " if (frame && id !== null && id !== undefined && id !== '')"
    f"  frame.contentWindow.postMessage({{type: {json.dumps(HIGHLIGHT_TYPE)}, id: Number(id)}},"
    " '*'); return []; }"
)
