"""Region search in the app: the chip index behind the image folders, and its results as a
map (footprints and callouts) and a table.

Nothing here imports gradio. The map is a folium (Leaflet) page with Leaflet's JavaScript
and CSS inlined from the installed XStatic-Leaflet package, so it draws without reaching a
CDN; only the OpenStreetMap background tiles need the internet.
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
from functools import lru_cache
from pathlib import Path
from typing import Any

from viper_rs.config import Settings
from viper_rs.errors import ConfigError, ViperError
from viper_rs.ui.evidence import escape_markdown

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
RESULT_COLUMNS = ["#", "score", "place (lat, lon)", "source", "date"]
#: What the map's "Ask about this chip" button posts to the page holding the map.
MESSAGE_TYPE = "viper-rs-open-chip"
#: Shown in the map's place before the first search.
EMPTY_MAP = ('<div id="region-map-empty" style="padding:2em;text-align:center;opacity:.7">'
             "Search to see the best-matching chips on a map.</div>")
#: Footprint and marker colours.
_OUTLINE = "#ff7800"
_MARKER = "#d7191c"

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

            index = ChipIndex.open(self.path)
            meta = index.meta
            return (f"Index: **{len(index):,} chips** of {meta.chip_m:g} m "
                    f"({meta.embedder}, {meta.model_id}).")
        except Exception as exc:  # noqa: BLE001 - a status line must not break the page
            return f"Index {_code(self.path)} cannot be read: {escape_markdown(str(exc))}"

    def _folder_list(self) -> str:
        return ", ".join(_code(f) for f in self.folders)

    def build(self, progress: Progress | None = None) -> str:
        """Add the folders' new chips to the index (created when missing); a markdown
        summary. ViperError when nothing can be indexed."""
        from viper_rs.errors import InputError
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
            if not self.exists():
                built = self.build(lambda f, what: step(0.8 * f, what)) + "\n\n"
            step(0.85, "Searching")
            result = self.searcher().search(query, k=k)
            step(0.9, "Drawing the map")
            thumbs = thumbnails(result.hits)
        except ViperError as exc:
            return SearchView(built + _error_message(exc))
        except Exception as exc:  # noqa: BLE001 - the app must stay up and say what happened
            log.exception("region search for %r failed", query)
            return SearchView(f"{built}Internal error ({type(exc).__name__}): "
                              f"{escape_markdown(str(exc))}. The app is still running; the "
                              "details are in its log.")
        return SearchView(
            message=built + _result_message(result), hits=list(result.hits),
            map_html=map_html(result.hits, thumbs), rows=result_rows(result.hits),
            geojson=result.geojson(),
        )


def _build_message(report: Any) -> str:
    text = (f"Indexed: **{report.total_rows:,} chips** in the index ({report.indexed:,} added, "
            f"{report.existing:,} already there) from {report.sources} sources in "
            f"{report.seconds:.1f} s.")
    if report.skipped_sources:
        text += (f" {len(report.skipped_sources)} files were not indexed (e.g. no CRS or "
                 "fewer than 3 bands).")
    if report.failed:
        text += f" {len(report.failed)} chips could not be read."
    return text


def _code(path: str | Path) -> str:
    """``path`` as inline Markdown code."""
    return "`" + str(path).replace("`", "'") + "`"


def _result_message(result: Any) -> str:
    text = (f"**{len(result.hits)}** best of {result.total:,} chips for "
            f"*{escape_markdown(result.query)}* ({result.embedder}, {result.ms:.0f} ms).")
    if result.embedder == "spectral":
        text += " Score: the fraction of the chip the concept covers."
    notes = [f"- {escape_markdown(n)}" for n in result.notes]
    if result.hits:
        notes.append("- Click a row (or *Ask about this chip* in a callout) to ask questions "
                     "about that chip in the Chat tab.")
    return "\n".join([text, *notes])


def _error_message(exc: ViperError) -> str:
    from viper_rs.errors import UnknownConceptError

    if isinstance(exc, UnknownConceptError):
        return f"Cannot search for that: {escape_markdown(str(exc))}"
    if isinstance(exc, ConfigError):
        return f"Settings problem: {escape_markdown(str(exc))}"
    return f"Could not search ({exc.type}): {escape_markdown(str(exc))}"


# ---------------------------------------------------------------------------- table
def result_rows(hits: Sequence[Any]) -> list[list]:
    """One table row per hit: rank, score, centre (lat, lon), source file name, date."""
    rows = []
    for h in hits:
        lon, lat = h.center
        rows.append([h.rank, round(float(h.score), 4), f"{lat:.5f}, {lon:.5f}",
                     h.source_name, h.datetime or ""])
    return rows


# ---------------------------------------------------------------------------- thumbnails
def thumbnail(hit: Any, side: int = THUMB_SIDE) -> str | None:
    """The chip's RGB as a ``data:image/png;base64`` URI, longest side ``side`` px; None
    when its pixels cannot be read."""
    from PIL import Image

    from viper_rs.geo import GeoImage
    from viper_rs.ui.evidence import overlay

    col, row, width, height = (int(v) for v in hit.window)
    scale = min(1.0, side / max(width, height, 1))
    out_size = None if scale >= 1 else (max(1, round(width * scale)),
                                         max(1, round(height * scale)))
    try:  # read averaged down to the thumbnail's size: big chips and COGs stay cheap
        image = GeoImage.open(hit.source, window=(col, row, width, height),
                              white_point=hit.white_point, out_size=out_size)
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
@lru_cache(maxsize=1)
def leaflet_assets() -> tuple[str, str]:
    """Leaflet's JavaScript and CSS from the installed XStatic-Leaflet package."""
    import xstatic.pkg.leaflet as leaflet

    base = Path(leaflet.BASE_DIR)
    js = (base / "leaflet.js").read_text(encoding="utf-8")
    css = (base / "leaflet.css").read_text(encoding="utf-8")
    # Inline text must not close its own tag early.
    return js.replace("</script", "<\\/script"), css.replace("</style", "<\\/style")


def callout_html(hit: Any, thumb: str | None = None) -> str:
    """The popup of one hit: rank, score, source, date, thumbnail and an 'ask' button."""
    lon, lat = hit.center
    parts = [f"<b>#{int(hit.rank)}</b> &middot; score {float(hit.score):.3f}",
             html.escape(str(hit.source_name))]
    if hit.datetime:
        parts.append(html.escape(str(hit.datetime)))
    parts.append(f"{lat:.5f}, {lon:.5f}")
    text = "<br>".join(parts)
    image = (f'<img class="viper-thumb" src="{thumb}" alt="chip #{int(hit.rank)}" '
             'style="display:block;margin-top:4px;max-width:160px;max-height:160px">'
             if thumb else "")
    button = (f'<button class="viper-open" type="button" data-rank="{int(hit.rank)}" '
              'style="margin-top:6px;cursor:pointer" onclick="viperOpen(this)">'
              "Ask about this chip</button>")
    return f'<div class="viper-callout" style="font:13px sans-serif">{text}{image}{button}</div>'


def _callout_element(text: str, tooltip: str | None) -> Any:
    """A folium element binding a popup (and a tooltip) to its parent layer (HTML, passed as
    escaped JS strings: folium's Popup needs jQuery and its Tooltip does not escape)."""
    from branca.element import MacroElement
    from folium.template import Template

    element = MacroElement()
    element._name = "Callout"
    element.popup = text
    element.tooltip = tooltip
    element._template = Template(
        "{% macro script(this, kwargs) %}\n"
        "{{ this._parent.get_name() }}.bindPopup({{ this.popup|tojavascript }}, "
        "{maxWidth: 240});\n"
        "{% if this.tooltip %}{{ this._parent.get_name() }}.bindTooltip("
        "{{ this.tooltip|tojavascript }});{% endif %}\n"
        "{% endmacro %}"
    )
    return element


def map_document(hits: Sequence[Any], thumbs: dict[int, str] | None = None) -> str:
    """A self-contained HTML page: each hit's footprint polygon and a circle marker at its
    centre with a callout, fitted to the hits, Leaflet inlined (no CDN)."""
    import folium
    from branca.element import Element

    thumbs = thumbs or {}
    fmap = folium.Map(tiles="OpenStreetMap", control_scale=True, prefer_canvas=False,
                      zoom_start=2, location=[0, 0])
    fmap.default_js, fmap.default_css = [], []  # Leaflet comes inline; no other CDN assets
    js, css = leaflet_assets()
    root = fmap.get_root()
    root.header.add_child(Element(f"<style>{css}</style>"), name="leaflet_css", index=0)
    root.header.add_child(Element(f"<script>{js}</script>"), name="leaflet_js", index=1)
    root.header.add_child(Element(_OPEN_SCRIPT), name="viper_open")
    for h in hits:
        ring = [[h.corners[i + 1], h.corners[i]] for i in range(0, 8, 2)]
        lon, lat = h.center
        group = folium.FeatureGroup(name=f"#{int(h.rank)}", control=False)
        folium.Polygon(ring, color=_OUTLINE, weight=2, fill=True,
                       fill_opacity=0.15).add_to(group)
        folium.CircleMarker([lat, lon], radius=7, color="#ffffff", weight=2, fill=True,
                            fill_color=_MARKER, fill_opacity=0.9).add_to(group)
        label = html.escape(f"#{int(h.rank)} · {float(h.score):.3f} · {h.source_name}")
        group.add_child(_callout_element(callout_html(h, thumbs.get(h.rank)), label))
        group.add_to(fmap)
    if hits:
        fmap.add_child(_fit_element([[min(h.bbox[1] for h in hits), min(h.bbox[0] for h in hits)],
                                     [max(h.bbox[3] for h in hits), max(h.bbox[2] for h in hits)]]))
    return root.render()


def _fit_element(bounds: list[list[float]]) -> Any:
    """A folium element fitting its map to ``bounds`` ([[S, W], [N, E]]) whenever the map's
    frame gets a size: the frame may still be 0 px when its script runs, and a fit then
    zooms all the way in and leaves the paths undrawn."""
    from branca.element import MacroElement
    from folium.template import Template

    element = MacroElement()
    element._name = "FitBounds"
    element.bounds = bounds
    element._template = Template(
        "{% macro script(this, kwargs) %}\n"
        "(function (map) {\n"
        "  const fit = () => { map.invalidateSize();\n"
        "    const size = map.getSize(); if (!size.x || !size.y) return;\n"
        "    map.fitBounds({{ this.bounds|tojavascript }}, {padding: [20, 20], maxZoom: 17}); };\n"
        "  new ResizeObserver(fit).observe(map.getContainer());\n"
        "})({{ this._parent.get_name() }});\n"
        "{% endmacro %}"
    )
    return element


#: Posts the rank of a callout's chip to the page holding the map.
_OPEN_SCRIPT = (
    "<script>function viperOpen(button) {"
    f"parent.postMessage({{type: {json.dumps(MESSAGE_TYPE)}, "
    "rank: Number(button.dataset.rank)}, '*');}</script>"
)


def map_html(hits: Sequence[Any], thumbs: dict[int, str] | None = None,
             height: int = MAP_HEIGHT) -> str:
    """The map as an ``<iframe srcdoc=...>`` for the app (scripts run inside the frame,
    sandboxed: no access to the app's page)."""
    if not hits:
        return EMPTY_MAP
    doc = html.escape(map_document(hits, thumbs), quote=True)
    return (f'<iframe class="viper-region-map" title="Search results map" '
            f'sandbox="allow-scripts allow-popups" srcdoc="{doc}" '
            f'style="width:100%;height:{int(height)}px;border:0;border-radius:6px"></iframe>')


#: The app's listener for the map's "Ask about this chip" button (gr.HTML js_on_load):
#: it accepts messages from its own iframe only and fires the component's click event.
MAP_LISTENER = (
    "if (!element.__viperListening) {"
    " element.__viperListening = true;"
    " window.addEventListener('message', (event) => {"
    "  const frame = element.querySelector('iframe');"
    "  const data = event.data || {};"
    f"  if (!frame || event.source !== frame.contentWindow || data.type !== "
    f"{json.dumps(MESSAGE_TYPE)}) return;"
    "  trigger('click', {rank: Number(data.rank)});"
    " });"
    "}"
)
