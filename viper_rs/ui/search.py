"""Region search in the app: the chip index behind the image folders, and its results as a
map (the folders' own imagery, footprints, rank labels and callouts) and a table.

Nothing here imports gradio. The map is a folium (Leaflet) page with Leaflet's JavaScript
and CSS inlined from the installed XStatic-Leaflet package and the sources' low-resolution
pictures (built with the index, :mod:`viper_rs.index.overlays`) inlined as image overlays,
so it draws without the internet; only the OpenStreetMap background tiles need it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from viper_rs.core.config import Settings
from viper_rs.core.errors import ConfigError, ViperError
from viper_rs.core.textsafe import safe_html, safe_text
from viper_rs.ui.area import VIEW_TYPE, new_map_id, view_post_js
from viper_rs.ui.evidence import escape_markdown
from viper_rs.ui.leaflet import leaflet_assets  # also used by the answer map

log = logging.getLogger(__name__)

#: Environment variable naming the app's index folder (``--index`` wins over it).
INDEX_ENV = "VIPER_RS_INDEX"
#: Chip side (m) of the index the app builds from its folders.
DEFAULT_CHIP_M = 256.0
#: Longest side (px) of a callout's thumbnail.
THUMB_SIDE = 160
#: Height of the map (px).
MAP_HEIGHT = 560
#: Most results one search may ask for.
MAX_K = 100
#: Longest query (characters).
MAX_QUERY_CHARS = 200
#: Control characters (NUL, escape...), replaced by spaces in queries.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Columns of the results table.
RESULT_COLUMNS = ["#", "score", "measured", "place (lat, lon)", "source", "date"]
#: What the map's "Ask about this chip" button posts to the page holding the map.
MESSAGE_TYPE = "viper-rs-open-chip"
#: Shown in the map's place before the first search.
EMPTY_MAP = ('<div id="region-map-empty" style="padding:2em;text-align:center;opacity:.7">'
             "Search to see the best-matching chips on a map.</div>")
#: Footprint and marker colours.
_OUTLINE = "#ff7800"
_MARKER = "#d7191c"
#: Most bytes of imagery (PNG) one map inlines: the map goes to the browser whole.
MAX_MAP_IMAGERY_BYTES = 6_000_000
#: Hits whose centres are closer than this (km, chained) are one place; the map opens on
#: the place of the best hit and offers the others.
PLACE_KM = 25.0
#: Seconds an index built before map imagery existed may spend drawing it on a search.
OVERLAY_BUDGET_S = 30.0
#: The map id in the results map's frame (see :func:`map_html`).
_MAP_ID = re.compile(r'<iframe class="viper-region-map"[^>]* data-map-id="([^"]+)"')
#: Layer names in the map's layer control.
OSM_LAYER, IMAGERY_LAYER = "OpenStreetMap", "Imagery (offline)"

#: Progress callback: (fraction 0-1, what is happening).
Progress = Callable[[float, str], None]


@dataclass
class SearchView:
    """Everything the Region search tab shows for one search (or a message on failure)."""

    message: str
    hits: list[Any] = field(default_factory=list)
    map_html: str = EMPTY_MAP
    rows: list[list] = field(default_factory=list)
    geojson: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the search ran (it may still have found nothing)."""
        return self.geojson is not None

    @property
    def map_id(self) -> str:
        """The id the map tags its posted views with ("" without a map)."""
        found = _MAP_ID.search(self.map_html)
        return found.group(1) if found else ""


# ---------------------------------------------------------------------------- the index
def default_index_path(folders: Sequence[str | Path], settings: Settings,
                       chip_m: float = DEFAULT_CHIP_M, given: str | Path | None = None) -> Path:
    """The app's index folder: ``given`` (``--index``), else ``$VIPER_RS_INDEX``, else
    ``<cache_dir>/index/folders-<hash>``, the hash naming the resolved folders and the chip
    size (another folder list or chip size gets another index)."""
    if given:
        return Path(given).expanduser()
    env = os.environ.get(INDEX_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    names = sorted({str(Path(f).expanduser().resolve()) for f in folders})
    text = "\n".join(names) + f"\nchip_m={float(chip_m):g}"
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    return Path(settings.cache_dir) / "index" / f"folders-{digest}"


def index_embedder(detector: str | None) -> str:
    """The embedder the app indexes with: the app's detector when it is one of
    ``graft``/``clip``/``spectral``, else ``auto`` (GRAFT, CLIP, spectral: what is found)."""
    name = (detector or "auto").lower()
    return name if name in ("graft", "clip", "spectral") else "auto"


class RegionSearch:
    """The app's chip index: where it is, which folders feed it, building and searching it.

    Searching before the index exists builds it first. An existing index keeps its own
    embedder and chip grid when it is updated.
    """

    def __init__(self, path: str | Path, folders: Sequence[str | Path] = (),
                 settings: Settings | None = None, embedder: str = "auto",
                 chip_m: float = DEFAULT_CHIP_M) -> None:
        self.path = Path(path)
        self.folders = [Path(f) for f in folders]
        self.settings = settings or Settings()
        self.embedder = embedder
        self.chip_m = float(chip_m)
        self._lock = threading.RLock()
        self._searcher: Any = None
        self._overlays_checked = False

    @classmethod
    def for_folders(cls, folders: Sequence[str | Path], settings: Settings,
                    index: str | Path | None = None,
                    chip_m: float = DEFAULT_CHIP_M) -> RegionSearch:
        """The region search of an app showing ``folders`` (see :func:`default_index_path`)."""
        return cls(default_index_path(folders, settings, chip_m, index), folders, settings,
                   index_embedder(settings.detector), chip_m)

    def exists(self) -> bool:
        """Whether the index has been built."""
        from viper_rs.index import ChipIndex

        return ChipIndex.exists(self.path)

    def status(self) -> str:
        """A markdown line on the index: its size and recipe, or how it will be built."""
        if not self.exists():
            if not self.folders:
                return (f"No index at {_code(self.path)} yet and no image folders to build one "
                        "from: start the app with `--folder DIR` or `--index PATH`.")
            return (f"Index not built yet: the first search (or *Build / update index*) "
                    f"chips and embeds the GeoTIFFs in {self._folder_list()}.")
        try:
            from viper_rs.index import ChipIndex
            from viper_rs.index.overlays import load_overlays

            index = ChipIndex.open(self.path)
            meta = index.meta
            pictures = len(load_overlays(self.path))
            old = (" Built before chips carried measured cover (buildings, roads, water, "
                   "vegetation): the next search updates it." if index.outdated() else "")
            return (f"Index: **{len(index):,} chips** of {meta.chip_m:g} m "
                    f"({meta.embedder}, {meta.model_id}); map imagery of {pictures:,} "
                    f"source{'s' if pictures != 1 else ''}.{old}")
        except Exception as exc:  # noqa: BLE001 - a status line must not break the page
            return f"Index {_code(self.path)} cannot be read: {escape_markdown(str(exc))}"

    def _folder_list(self) -> str:
        return ", ".join(_code(f) for f in self.folders)

    def build(self, progress: Progress | None = None) -> str:
        """Add the folders' new chips to the index (created when missing); a markdown
        summary. ViperError when nothing can be indexed."""
        from viper_rs.core.errors import InputError
        from viper_rs.index import ChipGrid, ChipIndex, build_index

        if not self.folders:
            what = "to add to the index" if self.exists() else \
                f"to build one from and no index at {self.path}"
            raise InputError(f"no image folders {what}; start the app with --folder DIR "
                             "or --index PATH")
        missing = [f for f in self.folders if not f.exists()]
        if len(missing) == len(self.folders):
            raise InputError("the image folders do not exist: "
                             + ", ".join(str(f) for f in missing))
        step = progress or (lambda fraction, what: None)
        embedder, grid = self.embedder, ChipGrid(self.chip_m)
        with self._lock:
            if self.exists():  # an update keeps the index's own recipe
                meta = ChipIndex.open(self.path).meta
                embedder, grid = meta.embedder, ChipGrid(meta.chip_m, meta.overlap)
            step(0.0, "Finding imagery")
            report = build_index(
                [f for f in self.folders if f.exists()], self.path, embedder=embedder,
                settings=self.settings, grid=grid, progress=False,
                on_progress=lambda done, total: step(done / max(total, 1),
                                                     f"Indexing chips ({done}/{total})"),
            )
            self._searcher = None  # re-open: the table changed
        return _build_message(report)

    def overlays(self) -> dict[str, Any]:
        """The index's map pictures by source key (:class:`viper_rs.index.overlays.Overlay`);
        the first call draws those an older index lacks (within :data:`OVERLAY_BUDGET_S`).
        Empty when there are none: the map then has no imagery layer."""
        from viper_rs.index.overlays import load_overlays

        with self._lock:
            if not self._overlays_checked:
                self._overlays_checked = True
                try:
                    self._draw_missing_overlays()
                except Exception:  # noqa: BLE001 - the map works without the pictures
                    log.exception("could not draw the map imagery of %s", self.path)
        return load_overlays(self.path)

    def _draw_missing_overlays(self) -> None:
        from viper_rs.core.errors import InputError
        from viper_rs.index import ChipIndex
        from viper_rs.index.overlays import known_sources, update_overlays
        from viper_rs.tiling.sources import describe

        known = known_sources(self.path)
        missing = [u for u in ChipIndex.open(self.path).sources() if source_key(u) not in known]
        sources = []
        for uri in missing:
            try:
                sources.append(describe(uri))
            except InputError as exc:
                log.info("no map picture for %s: %s", uri, exc)
        if sources:
            report = update_overlays(self.path, sources, budget_s=OVERLAY_BUDGET_S)
            log.info("%s: %s", self.path, report.summary())

    def outdated(self) -> bool:
        """Whether the index predates chip attributes and its folders can update it (a
        search then updates it first, as it builds a missing one)."""
        from viper_rs.index import ChipIndex

        if not self.folders or not any(f.exists() for f in self.folders):
            return False
        try:
            return ChipIndex.open(self.path).outdated() is not None
        except ViperError:
            return False

    def searcher(self) -> Any:
        """The index's Searcher (opened once, again after a build)."""
        from viper_rs.index import Searcher

        with self._lock:
            if self._searcher is None:
                self._searcher = Searcher(self.path, self.settings)
            return self._searcher

    def search(self, query: str, k: int = 10, progress: Progress | None = None) -> SearchView:
        """The ``k`` best chips for ``query`` on a map and in a table; building the index
        first when it does not exist. Every failure becomes a message."""
        query = " ".join(_CONTROL.sub(" ", str(query or "")).split())
        if not query:
            return SearchView("Type what to look for, e.g. *water*, *trees* or *buildings*.")
        if len(query) > MAX_QUERY_CHARS:
            return SearchView(f"That query is {len(query):,} characters long; the limit is "
                              f"{MAX_QUERY_CHARS}. Type a short concept such as *water*.")
        try:
            k = int(k)
        except (TypeError, ValueError):
            k = 10
        k = min(max(k, 1), MAX_K)
        step = progress or (lambda fraction, what: None)
        built = ""
        try:
            if not self.exists() or self.outdated():
                built = self.build(lambda f, what: step(0.8 * f, what)) + "\n\n"
            step(0.85, "Searching")
            result = self.searcher().search(query, k=k)
            step(0.9, "Drawing the map")
            thumbs = thumbnails(result.hits)
            imagery = map_imagery(result.hits, self.overlays())
        except ViperError as exc:
            return SearchView(built + _error_message(exc))
        except Exception as exc:  # noqa: BLE001 - the app must stay up and say what happened
            log.exception("region search for %r failed", query)
            return SearchView(f"{built}Internal error ({type(exc).__name__}): "
                              f"{escape_markdown(str(exc))}. The app is still running; the "
                              "details are in its log.")
        return SearchView(
            message=built + _result_message(result), hits=list(result.hits),
            map_html=map_html(result.hits, thumbs, imagery=imagery),
            rows=result_rows(result.hits, result.ranked_by),
            geojson=public_geojson(result.geojson()),
        )


def source_key(uri: str) -> str:
    """The index's key of a source URI (a URL without its query string: signing tokens)."""
    from viper_rs.core.rasterfile import is_remote

    return uri.split("?")[0] if is_remote(uri) else uri


def public_geojson(fc: dict[str, Any]) -> dict[str, Any]:
    """``fc`` (the hits' FeatureCollection) naming each source by its file name only: the
    app's downloads never show the server's folders or a URL's signing token."""
    out = dict(fc)
    features = []
    for feature in fc.get("features", []):
        props = dict(feature.get("properties") or {})
        if "source" in props:
            props["source"] = props.get("source_name") or _file_name(str(props["source"]))
        features.append({**feature, "properties": props})
    out["features"] = features
    return out


def _file_name(uri: str) -> str:
    return uri.split("?")[0].rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]


def _build_message(report: Any) -> str:
    measured = getattr(report, "remeasured", 0)
    text = (f"Indexed: **{report.total_rows:,} chips** in the index ({report.indexed:,} added, "
            f"{report.existing:,} already there"
            + (f", {measured:,} of them measured for cover" if measured else "")
            + f") from {report.sources} sources in {report.seconds:.1f} s.")
    if report.skipped_sources:
        text += (f" {len(report.skipped_sources)} files were not indexed (e.g. no CRS or "
                 "fewer than 3 bands).")
    if report.failed:
        text += f" {len(report.failed)} chips could not be read."
    pictures = getattr(report, "overlays", None)
    if pictures is not None and (pictures.built or pictures.skipped):
        text += f" Map imagery: {pictures.built} sources drawn in {pictures.seconds:.1f} s"
        text += (f", {len(pictures.skipped)} could not be drawn (see the log)."
                 if pictures.skipped else ".")
    return text


def _code(path: str | Path) -> str:
    """``path`` as inline Markdown code."""
    return "`" + str(path).replace("`", "'") + "`"


def _result_message(result: Any) -> str:
    text = (f"**{len(result.hits)}** best of {result.total:,} chips for "
            f"*{escape_markdown(result.query)}* ({result.embedder}, {result.ms:.0f} ms).")
    if result.ranked_by:
        text += " Ranked by the cover the detectors measured on each chip (*measured*)."
    elif result.embedder == "spectral":
        text += " Score: the fraction of the chip the concept covers."
    notes = [f"- {escape_markdown(n)}" for n in result.notes]
    if result.hits:
        notes.append("- Click a row (or *Ask about this chip* in a callout) to ask questions "
                     "about that chip in the Chat tab.")
    return "\n".join([text, *notes])


def _error_message(exc: ViperError) -> str:
    from viper_rs.core.errors import UnknownConceptError

    if isinstance(exc, UnknownConceptError):
        return f"Cannot search for that: {escape_markdown(str(exc))}"
    if isinstance(exc, ConfigError):
        return f"Settings problem: {escape_markdown(str(exc))}"
    return f"Could not search ({exc.type}): {escape_markdown(str(exc))}"


# ---------------------------------------------------------------------------- table
def result_rows(hits: Sequence[Any], ranked_by: str | None = None) -> list[list]:
    """One table row per hit: rank, score, the measured attribute the hits are ranked by
    (``ranked_by``, e.g. "23.4% buildings (14)"; empty when ranked by score), centre
    (lat, lon), source file name, date."""
    from viper_rs.index.attributes import BY_COLUMN, cell

    attr = BY_COLUMN.get(ranked_by or "")
    rows = []
    for h in hits:
        lon, lat = h.center
        measured = ""
        if attr is not None:
            measured = cell(getattr(h, "attributes", {}), getattr(h, "unknown", {}), attr)
        rows.append([h.rank, round(float(h.score), 4), measured, f"{lat:.5f}, {lon:.5f}",
                     safe_text(h.source_name), safe_text(h.datetime or "")])
    return rows


# ---------------------------------------------------------------------------- thumbnails
def thumbnail(hit: Any, side: int = THUMB_SIDE) -> str | None:
    """The chip's RGB as a ``data:image/png;base64`` URI, longest side ``side`` px; None
    when its pixels cannot be read."""
    from PIL import Image

    from viper_rs.core.geo import GeoImage
    from viper_rs.ui.evidence import overlay

    col, row, width, height = (int(v) for v in hit.window)
    scale = min(1.0, side / max(width, height, 1))
    out_size = None if scale >= 1 else (max(1, round(width * scale)),
                                         max(1, round(height * scale)))
    try:  # read averaged down to the thumbnail's size: big chips and COGs stay cheap
        image = GeoImage.open(hit.source, window=(col, row, width, height),
                              white_point=hit.white_point, out_size=out_size,
                              remote=True)  # a source the index accepted
    except ViperError as exc:
        log.info("no thumbnail for %s: %s", hit.id, exc)
        return None
    picture, _ = overlay(image, None, max_side=side)
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnails(hits: Sequence[Any], side: int = THUMB_SIDE,
               budget_s: float = 20.0) -> dict[int, str]:
    """Thumbnails by rank (hits whose pixels cannot be read, or past the time budget,
    have none)."""
    out: dict[int, str] = {}
    t0 = time.monotonic()
    for h in hits:
        if time.monotonic() - t0 > budget_s:
            break
        uri = thumbnail(h, side)
        if uri:
            out[h.rank] = uri
    return out


# ---------------------------------------------------------------------------- map
def places(hits: Sequence[Any], km: float = PLACE_KM) -> list[list[Any]]:
    """The hits grouped by place: hits whose centres are within ``km`` of each other
    (chained) share one; places in the order of their best hit, hits by rank."""
    n = len(hits)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    centres = [h.center for h in hits]
    for i in range(n):
        for j in range(i + 1, n):
            if _km(centres[i], centres[j]) <= km:
                parent[find(j)] = find(i)
    groups: dict[int, list[Any]] = {}
    for i, h in enumerate(hits):
        groups.setdefault(find(i), []).append(h)
    out = [sorted(g, key=lambda h: h.rank) for g in groups.values()]
    return sorted(out, key=lambda g: g[0].rank)


def _km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (km) between two (lon, lat) points."""
    import math

    lon1, lat1, lon2, lat2 = (math.radians(v) for v in (*a, *b))
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


def _bounds(hits: Sequence[Any]) -> list[list[float]]:
    """[[S, W], [N, E]] of the hits' footprints (Leaflet's order)."""
    return [[min(h.bbox[1] for h in hits), min(h.bbox[0] for h in hits)],
            [max(h.bbox[3] for h in hits), max(h.bbox[2] for h in hits)]]


def map_imagery(hits: Sequence[Any], overlays: dict[str, Any],
                max_bytes: int = MAX_MAP_IMAGERY_BYTES) -> list[Any]:
    """The pictures a map of ``hits`` shows, bottom to top: the hits' own sources (the best
    hit's on top) and the other sources around each place, while they fit in ``max_bytes``
    (the best hit's source always)."""
    if not hits or not overlays:
        return []
    ranked = list(dict.fromkeys(source_key(h.source) for h in hits))
    own = [overlays[k] for k in ranked if k in overlays]
    areas = []
    for group in places(hits):
        (s, w), (n, e) = _bounds(group)
        pad_lat, pad_lon = max((n - s) * 0.5, 0.01), max((e - w) * 0.5, 0.01)
        areas.append((w - pad_lon, s - pad_lat, e + pad_lon, n + pad_lat))
    centres = [h.center for h in hits]

    def distance(ov: Any) -> float:
        w, s, e, n = ov.bounds
        mid = ((w + e) / 2, (s + n) / 2)
        return min(_km(mid, c) for c in centres)

    near = [ov for k, ov in overlays.items() if k not in ranked and any(
        ov.bounds[0] <= a[2] and ov.bounds[2] >= a[0] and ov.bounds[1] <= a[3]
        and ov.bounds[3] >= a[1] for a in areas)]
    chosen, total = [], 0
    for ov in own + sorted(near, key=distance):
        size = ov.bytes
        if chosen and total + size > max_bytes:
            continue
        chosen.append(ov)
        total += size
    return chosen[::-1]


def thumb_size(hit: Any, side: int = THUMB_SIDE) -> tuple[int, int]:
    """(width, height) px of a hit's thumbnail (:func:`thumbnail`): its chip window, the
    longest side at most ``side``."""
    width, height = (max(int(v), 1) for v in hit.window[2:4])
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def callout_html(hit: Any, thumb: str | None = None) -> str:
    """The popup of one hit: rank, score, source, date, thumbnail and an 'ask' button."""
    lon, lat = hit.center
    parts = [f"<b>#{int(hit.rank)}</b> &middot; score {float(hit.score):.3f}",
             safe_html(hit.source_name)]
    if hit.datetime:
        parts.append(safe_html(hit.datetime))
    parts.append(f"{lat:.5f}, {lon:.5f}")
    text = "<br>".join(parts)
    width, height = thumb_size(hit)
    image = (f'<img class="viper-thumb" src="{thumb}" alt="chip #{int(hit.rank)}" '
             f'width="{width}" height="{height}" style="display:block;margin-top:4px;'
             f'width:{width}px;height:{height}px;object-fit:contain">'
             if thumb else "")
    button = (f'<button class="viper-open" type="button" data-rank="{int(hit.rank)}" '
              'style="margin-top:6px;cursor:pointer" onclick="viperOpen(this)">'
              "Ask about this chip</button>")
    return f'<div class="viper-callout" style="font:13px sans-serif">{text}{image}{button}</div>'


def _macro(name: str, script: str, **values: Any) -> Any:
    """A folium element whose script is ``script`` (a Jinja template seeing ``this``, with
    ``values`` as its attributes)."""
    from branca.element import MacroElement
    from folium.template import Template

    element = MacroElement()
    element._name = name
    for key, value in values.items():
        setattr(element, key, value)
    element._template = Template("{% macro script(this, kwargs) %}\n" + script
                                 + "\n{% endmacro %}")
    return element


def _callout_element(text: str, tooltip: str | None, picture: str | None = None) -> Any:
    """A folium element binding a popup (and a tooltip) to its parent layer (HTML, passed as
    escaped JS strings: folium's Popup needs jQuery and its Tooltip does not escape); a
    click also brings ``picture`` (the JS name of the hit's source image overlay) to the
    top of the imagery."""
    return _macro(
        "Callout",
        "{{ this._parent.get_name() }}.bindPopup({{ this.popup|tojavascript }}, "
        "{maxWidth: 240, autoPanPadding: [12, 12]});\n"
        "{% if this.tooltip %}{{ this._parent.get_name() }}.bindTooltip("
        "{{ this.tooltip|tojavascript }});{% endif %}\n"
        "{% if this.picture %}{{ this._parent.get_name() }}.on('click', function () { "
        "{{ this.picture }}.bringToFront(); });{% endif %}",
        popup=text, tooltip=tooltip, picture=picture,
    )


def map_document(hits: Sequence[Any], thumbs: dict[int, str] | None = None,
                 imagery: Sequence[Any] = (), map_id: str = "") -> str:
    """A self-contained HTML page (Leaflet inlined, no CDN): the sources' pictures
    (``imagery``, :class:`viper_rs.index.overlays.Overlay`, bottom to top) over an
    OpenStreetMap background, then each hit's footprint, a dot at its centre and a rank
    label with a callout. Labels that would overlap at the current zoom are spread around
    their centre with leader lines. The map fits the place of the best hit; when the hits
    are in several places a box offers each place and all of them. Its views are posted
    tagged ``map_id`` (see :class:`viper_rs.ui.area.ViewTracker`)."""
    import folium
    from branca.element import Element
    from folium.map import CustomPane

    thumbs = thumbs or {}
    fmap = folium.Map(tiles=None, control_scale=True, prefer_canvas=False, zoom_start=2,
                      location=[0, 0])
    fmap.default_js, fmap.default_css = [], []  # Leaflet comes inline; no other CDN assets
    js, css = leaflet_assets()
    root = fmap.get_root()
    root.header.add_child(Element(f"<style>{css}</style>"), name="leaflet_css", index=0)
    root.header.add_child(Element(f"<script>{js}</script>"), name="leaflet_js", index=1)
    root.header.add_child(Element(_OPEN_SCRIPT), name="viper_open")
    root.header.add_child(Element(_MAP_STYLE), name="viper_style")
    folium.TileLayer("OpenStreetMap", name=OSM_LAYER, control=True).add_to(fmap)
    pictures: dict[str, str] = {}
    if imagery:
        CustomPane("viper-imagery", z_index=250, pointer_events=False).add_to(fmap)
        group = folium.FeatureGroup(name=IMAGERY_LAYER, overlay=True, control=True, show=True)
        for ov in imagery:
            (w, s, e, n) = ov.bounds
            layer = folium.raster_layers.ImageOverlay(
                ov.data_uri(), bounds=[[s, w], [n, e]], name=ov.name, pane="viper-imagery",
                interactive=False, attribution="imagery: the indexed GeoTIFFs")
            layer.add_to(group)
            pictures[ov.key] = layer.get_name()
        group.add_to(fmap)
    labels = []
    for h in hits:
        ring = [[h.corners[i + 1], h.corners[i]] for i in range(0, 8, 2)]
        lon, lat = h.center
        group = folium.FeatureGroup(name=f"#{int(h.rank)}", control=False)
        folium.Polygon(ring, color=_OUTLINE, weight=2, fill=True,
                       fill_opacity=0.07).add_to(group)
        folium.CircleMarker([lat, lon], radius=4, color="#ffffff", weight=1.5, fill=True,
                            fill_color=_MARKER, fill_opacity=1.0).add_to(group)
        label = folium.Marker([lat, lon], icon=folium.DivIcon(
            html=f'<div class="viper-rank">{int(h.rank)}</div>', icon_size=(24, 24),
            icon_anchor=(12, 12), class_name="viper-rank-icon"))
        label.add_to(group)
        labels.append((label.get_name(), lat, lon))
        tip = safe_html(f"#{int(h.rank)} · {float(h.score):.3f} · {h.source_name}")
        group.add_child(_callout_element(callout_html(h, thumbs.get(h.rank)), tip,
                                          pictures.get(source_key(h.source))))
        group.add_to(fmap)
    if imagery:
        folium.LayerControl(collapsed=False, position="topright").add_to(fmap)
    if hits:
        fmap.add_child(_spread_element(labels))
        groups = places(hits)
        fmap.add_child(_fit_element(_bounds(groups[0]), map_id))
        if len(groups) > 1:
            fmap.add_child(_places_element(groups))
    return root.render()


#: Styles of the map page: rank labels, leader lines, the places box.
_MAP_STYLE = """<style>
.viper-rank-icon { background: none; border: 0; }
.viper-rank { width: 24px; height: 24px; box-sizing: border-box; border-radius: 50%;
  background: #d7191c; color: #fff; border: 2px solid #fff; text-align: center;
  font: bold 12px/20px sans-serif; box-shadow: 0 0 4px rgba(0,0,0,.7); cursor: pointer; }
.leaflet-control-layers { font: 12px/1.4 sans-serif; }
.viper-places { background: rgba(255,255,255,.92); padding: 6px 8px; border-radius: 5px;
  font: 12px sans-serif; max-width: 260px; box-shadow: 0 1px 5px rgba(0,0,0,.4); }
.viper-places button { display: block; width: 100%; margin-top: 4px; text-align: left;
  cursor: pointer; font: 12px sans-serif; overflow: hidden; text-overflow: ellipsis;
  white-space: nowrap; }
</style>"""


def _spread_element(labels: list[tuple[str, float, float]], radius_px: int = 26) -> Any:
    """A folium element that, at every zoom, places each rank label just above its hit's
    centre, and spreads labels that would come closer than ``radius_px`` to each other on
    a ring around their common centre (so coincident hits can each be clicked); a leader
    line joins every label to its hit's centre."""
    items = ", ".join(f"{{m: {name}, ll: L.latLng({lat!r}, {lon!r})}}" for name, lat, lon in labels)
    return _macro("SpreadLabels", """(function (map, items, R) {
  const lines = L.layerGroup().addTo(map);
  function layout() {
    lines.clearLayers();
    const pts = items.map(it => map.latLngToLayerPoint(it.ll));
    const lift = L.point(0, -0.85 * R);  // a lone label sits above its dot, like a pin
    const centre = g => (g.length === 1 ? pts[g[0]].add(lift)
      : g.reduce((a, i) => a.add(pts[i]), L.point(0, 0)).divideBy(g.length));
    const ring = g => Math.max(R, R * g.length / (2 * Math.PI)) * 1.15;
    const extent = g => (g.length === 1 ? 0 : ring(g)) + R / 2;
    const leader = (from, to) => {
      L.polyline([from, to], {color: '#000000', weight: 4, opacity: 0.5,
                 interactive: false}).addTo(lines);
      L.polyline([from, to], {color: '#ffffff', weight: 2, opacity: 0.95,
                 interactive: false, className: 'viper-leader'}).addTo(lines); };
    // Merge groups whose labels would touch (a ring may reach a neighbour), until none do.
    const groups = items.map((_, i) => [i]);
    for (let merged = true; merged;) {
      merged = false;
      search: for (let a = 0; a < groups.length; a++)
        for (let b = a + 1; b < groups.length; b++)
          if (centre(groups[a]).distanceTo(centre(groups[b]))
              < extent(groups[a]) + extent(groups[b])) {
            groups[a] = groups[a].concat(groups[b]).sort((x, y) => x - y);
            groups.splice(b, 1);
            merged = true;
            break search;
          }
    }
    groups.forEach(g => {
      const c = centre(g), r = g.length === 1 ? 0 : ring(g);
      g.forEach((i, k) => {
        const a = -Math.PI / 2 + 2 * Math.PI * k / g.length;
        const ll = map.layerPointToLatLng(c.add(L.point(Math.cos(a) * r, Math.sin(a) * r)));
        items[i].m.setLatLng(ll);
        leader(items[i].ll, ll);
      });
    });
  }
  map.on('zoomend viewreset', layout);
  layout();
})({{ this._parent.get_name() }}, [{{ this.items }}], {{ this.radius }});""",
                  items=items, radius=int(radius_px))


def _fit_element(bounds: list[list[float]], map_id: str) -> Any:
    """A folium element fitting its map to ``bounds`` ([[S, W], [N, E]], padded) whenever
    the map's frame gets a size after having none (the frame may still be 0 px when its
    script runs, and a fit then zooms all the way in; a hidden tab shown again is fitted
    again). The fit keeps the hits clear of the map's controls (the places box, the layer
    list: :data:`FIT_PADDING_JS`). ``map.viperFit(bounds)`` changes the bounds; the map is
    ``window.viperMap``. From the first fit on, every move posts the map's view to the page
    holding it (:func:`viper_rs.ui.area.view_post_js`, tagged ``map_id``): the area of *Ask
    about this area*. A callout whose picture loads after it opened is laid out and kept
    inside the map again."""
    return _macro("FitBounds", FIT_PADDING_JS + view_post_js() + """(function (map) {
  window.viperMap = map;
  const view = viperWatchView(map, {{ this.map_id|tojavascript }});
  let target = {{ this.bounds|tojavascript }}, shown = false;
  map.viperFit = function (bounds) { target = bounds || target;
    const pad = viperFitPadding(map, L.latLngBounds(target), 30);
    view.start();
    map.fitBounds(target, {paddingTopLeft: pad[0], paddingBottomRight: pad[1], maxZoom: 17,
                           animate: false}); };
  const fit = () => { map.invalidateSize();
    const size = map.getSize(); const visible = size.x > 0 && size.y > 0;
    if (visible && !shown) map.viperFit();
    shown = visible; };
  new ResizeObserver(fit).observe(map.getContainer());
  map.on('popupopen', (e) => {
    e.popup.getElement().querySelectorAll('img').forEach(img => { if (!img.complete)
      img.addEventListener('load', () => { if (e.popup.isOpen()) e.popup.update(); }); }); });
})({{ this._parent.get_name() }});""", bounds=bounds, map_id=map_id)


#: ``viperFitPadding(map, bounds, base)``: the [top-left, bottom-right] padding (px) of a fit
#: that keeps ``bounds`` clear of every control in the map's corners. Each corner's controls
#: are cleared either above/below them or beside them; of those choices the one giving the
#: closest zoom (then the least padding) wins. ``base`` pads every side.
FIT_PADDING_JS = """function viperFitPadding(map, bounds, base) {
  const box = map.getContainer().getBoundingClientRect(), gap = 16;
  const corners = [];
  [['top', 'left'], ['top', 'right'], ['bottom', 'left'], ['bottom', 'right']].forEach(c => {
    const el = map.getContainer().querySelector('.leaflet-' + c[0] + '.leaflet-' + c[1]);
    if (!el) return;
    let x = 0, y = 0;
    el.querySelectorAll(':scope > .leaflet-control').forEach(k => {
      const r = k.getBoundingClientRect(); if (!r.width || !r.height) return;
      x = Math.max(x, c[1] === 'left' ? r.right - box.left : box.right - r.left);
      y = Math.max(y, c[0] === 'top' ? r.bottom - box.top : box.bottom - r.top); });
    if (x > 0 && y > 0) corners.push({v: c[0], h: c[1], x: x + gap, y: y + gap}); });
  let best = null;
  for (let k = 0; k < (1 << corners.length); k++) {
    const p = {top: base, bottom: base, left: base, right: base};
    corners.forEach((c, i) => { if (k & (1 << i)) p[c.h] = Math.max(p[c.h], c.x);
                                else p[c.v] = Math.max(p[c.v], c.y); });
    const free = L.point(box.width - p.left - p.right, box.height - p.top - p.bottom);
    if (free.x < 60 || free.y < 60) continue;
    const zoom = map.getBoundsZoom(bounds, false, L.point(p.left + p.right,
                                                          p.top + p.bottom));
    const cost = (p.left + p.right) * box.height + (p.top + p.bottom) * box.width;
    if (!best || zoom > best.zoom || (zoom === best.zoom && cost < best.cost))
      best = {zoom: zoom, cost: cost, p: p};
  }
  const p = best ? best.p : {top: base, bottom: base, left: base, right: base};
  return [[p.left, p.top], [p.right, p.bottom]];
}
"""


def _places_element(groups: list[list[Any]]) -> Any:
    """A folium element: a box (bottom left) with one button per place of the hits (its
    ranks and the best hit's source) that zooms there, and one for all of them."""
    buttons = []
    for i, group in enumerate(groups):
        ranks = ", ".join(f"#{int(h.rank)}" for h in group[:6]) + (" …" if len(group) > 6 else "")
        text = safe_html(f"{ranks} · {group[0].source_name}")
        buttons.append(f'<button type="button" data-place="{i}" title="{text}">{text}</button>')
    everything = [h for g in groups for h in g]
    buttons.append('<button type="button" data-place="all">All hits</button>')
    box = (f"<b>Hits in {len(groups)} places</b> (the map shows #1's)" + "".join(buttons))
    bounds = {str(i): _bounds(g) for i, g in enumerate(groups)}
    bounds["all"] = _bounds(everything)
    return _macro("Places", """(function (map) {
  const bounds = {{ this.bounds|tojavascript }};
  const Box = L.Control.extend({ options: {position: 'bottomleft'},
    onAdd: function () {
      const div = L.DomUtil.create('div', 'viper-places');
      div.innerHTML = {{ this.box|tojavascript }};
      L.DomEvent.disableClickPropagation(div);
      L.DomEvent.disableScrollPropagation(div);
      div.querySelectorAll('button').forEach(b => b.addEventListener('click',
        () => map.viperFit(bounds[b.dataset.place])));
      return div; } });
  new Box().addTo(map);
})({{ this._parent.get_name() }});""", bounds=bounds, box=box)


#: Posts the rank of a callout's chip to the page holding the map.
_OPEN_SCRIPT = (
    "<script>function viperOpen(button) {"
    f"parent.postMessage({{type: {json.dumps(MESSAGE_TYPE)}, "
    "rank: Number(button.dataset.rank)}, '*');}</script>"
)


def map_html(hits: Sequence[Any], thumbs: dict[int, str] | None = None,
             height: int = MAP_HEIGHT, imagery: Sequence[Any] = (), map_id: str = "") -> str:
    """The map as an ``<iframe srcdoc=...>`` for the app (scripts run inside the frame,
    sandboxed: no access to the app's page). Its views are posted tagged ``map_id`` (a new
    id when blank), which the frame carries as ``data-map-id`` (:attr:`SearchView.map_id`)."""
    if not hits:
        return EMPTY_MAP
    map_id = map_id or new_map_id()
    doc = html.escape(map_document(hits, thumbs, imagery, map_id), quote=True)
    return (f'<iframe class="viper-region-map" title="Search results map" '
            f'data-map-id="{html.escape(map_id)}" '
            f'sandbox="allow-scripts allow-popups" srcdoc="{doc}" '
            f'style="width:100%;height:{int(height)}px;border:0;border-radius:6px"></iframe>')


#: The app's listener for the map's "Ask about this chip" button (gr.HTML js_on_load):
#: it accepts messages from its own iframe only and fires the component's click event; a
#: posted view fires its select event (with the map's id and the post's number).
MAP_LISTENER = (
    "if (!element.__viperListening) {"
    " element.__viperListening = true;"
    " window.addEventListener('message', (event) => {"
    "  const frame = element.querySelector('iframe');"
    "  const data = event.data || {};"
    "  if (!frame || event.source !== frame.contentWindow) return;"
    f"  if (data.type === {json.dumps(VIEW_TYPE)}) trigger('select', "
    "{view: data.bounds, map: data.map, seq: data.seq});"
    f"  if (data.type !== {json.dumps(MESSAGE_TYPE)}) return;"
    "  trigger('click', {rank: Number(data.rank)});"
    " });"
    "}"
)
