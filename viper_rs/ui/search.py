"""Region search in the app: the chip index behind the image folders, searching it, and
its results as a table (the map they are drawn on is :mod:`viper_rs.ui.search_map`).

Nothing here imports gradio.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from viper_rs.core.config import Settings
from viper_rs.core.errors import ConfigError, ViperError
from viper_rs.core.textsafe import safe_text
from viper_rs.ui.evidence import escape_markdown
from viper_rs.ui.search_map import (
    EMPTY_MAP,
    frame_map_id,
    map_html,
    map_imagery,
    source_key,
    thumbnails,
)

log = logging.getLogger(__name__)

#: Environment variable naming the app's index folder (``--index`` wins over it).
INDEX_ENV = "VIPER_RS_INDEX"
#: Chip side (m) of the index the app builds from its folders.
DEFAULT_CHIP_M = 256.0
#: Most results one search may ask for.
MAX_K = 100
#: Longest query (characters).
MAX_QUERY_CHARS = 200
#: Control characters (NUL, escape...), replaced by spaces in queries.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Columns of the results table.
RESULT_COLUMNS = ["#", "score", "measured", "place (lat, lon)", "source", "date"]
#: Seconds an index built before map imagery existed may spend drawing it on a search.
OVERLAY_BUDGET_S = 30.0

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
        return frame_map_id(self.map_html)


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

