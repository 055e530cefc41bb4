"""What the chat UI shows for an answer: the overlay, the region table, the reply text and
the evidence files (GeoJSON, GeoPackage, answer JSON) offered for download.

Nothing here imports gradio: the functions return plain values (numpy arrays, lists,
dicts, strings, paths) that the UI hands to its components.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np

from viper_rs.agent.exports import GPKG_FIELDS, GPKG_LAYER, polygonal, write_regions_gpkg  # noqa: F401
from viper_rs.core.answer import Answer
from viper_rs.core.answer_json import MAX_NOTES
from viper_rs.core.errors import InputError
from viper_rs.core.geo import GeoImage
from viper_rs.core.image import Image
from viper_rs.core.regions import Region
from viper_rs.core.textsafe import safe_text
from viper_rs.core.wording import answer_parts

#: Longest side, in pixels, of the picture shown in the chat.
OVERLAY_MAX_SIDE = 1024

#: Columns of :func:`region_rows`.
REGION_COLUMNS: list[str] = ["id", "query", "label", "area", "unit", "score", "lon", "lat",
                             "col", "row"]


#: Colour of pixels without valid data in the overlay.
NODATA_RGB = (64, 64, 64)
#: Colour of the outline of an image's region of interest (a region-search chip).
ROI_RGB = (255, 120, 0)

_STRIPE_ROWS = 512  # input rows per stripe when building the overlay picture
_NOTES_SHOWN = 5
_MAX_NOTE_CHARS = 1_000  # in a collapsed block: the longest (auto's reason) are ~500
_MAX_ERROR_CHARS = 600
_QUESTION_FORMS = (
    "Is there a …?",
    "How many … are there?",
    "What is the area covered by …?",
    "Are there more … than …?",
)


# ---------------------------------------------------------------------------- overlay
def overlay(
    image: GeoImage, answer: Answer | None, max_side: int = OVERLAY_MAX_SIDE
) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
    """The ``gr.AnnotatedImage`` value for an answer about ``image``.

    Returns ``(picture, annotations)``: the image's 8-bit RGB (pixels without valid data
    in dark grey), box-averaged down so its longest side is at most ``max_side``, and one
    ``(mask, label)`` per distinct region query in first-seen order. Each mask is float32
    (1.0 on the union of that query's regions, 0.0 elsewhere) at the picture's size; a
    display pixel is marked when any image pixel under it is, so small regions stay
    visible. Labels read ``"building (3)"``: the query and its number of regions.
    ``answer=None`` or an answer without regions gives no annotations.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    h, w = image.shape
    scale = min(1.0, max_side / max(h, w))
    oh, ow = max(1, min(h, round(h * scale))), max(1, min(w, round(w * scale)))
    row_starts, col_starts = _starts(h, oh), _starts(w, ow)
    base = _picture(image, row_starts, col_starts)
    if image.roi is not None:
        outline_roi(base, image.roi[np.ix_(row_starts, col_starts)])
    if answer is None or not answer.regions:
        return base, []
    row_group = np.repeat(np.arange(oh), np.diff(np.append(row_starts, h)))
    col_group = np.repeat(np.arange(ow), np.diff(np.append(col_starts, w)))
    masks: dict[str, np.ndarray] = {}
    counts: Counter[str] = Counter()
    for region in answer.regions:
        query = _query_of(region)
        if query not in masks:
            masks[query] = np.zeros((oh, ow), dtype=bool)
        counts[query] += 1
        _paint_display(region, masks[query], row_group, col_group, (h, w))
    annotations = [
        (m.astype(np.float32), f"{query} ({counts[query]})") for query, m in masks.items()
    ]
    return base, annotations


def overlay_colours(annotations: list[tuple[np.ndarray, str]]) -> dict[str, str]:
    """The ``gr.AnnotatedImage`` ``color_map`` of :func:`overlay`'s annotations: each
    label in its class colour (:func:`viper_rs.ui.answer_map.colour_for`), as on the map."""
    from viper_rs.ui.answer_map import colour_for

    return {label: colour_for(label) for _, label in annotations}


def outline_roi(picture: np.ndarray, roi: np.ndarray, width: int = 3) -> None:
    """Draw a ``width`` px outline around ``roi`` (a display-size boolean mask) on
    ``picture`` in :data:`ROI_RGB`, just outside the region so its pixels stay visible
    (in place)."""
    grown = np.pad(roi, width, constant_values=False)
    for axis in (0, 1):
        layer = grown.copy()
        for shift in range(1, width + 1):
            layer |= np.roll(grown, shift, axis) | np.roll(grown, -shift, axis)
        grown = layer
    picture[grown[width:-width, width:-width] & ~roi] = ROI_RGB


def _starts(n: int, m: int) -> np.ndarray:
    """First input index of each of ``m`` nearly equal, non-empty groups of ``n`` items."""
    return (np.arange(m, dtype=np.int64) * n) // m


def _picture(image: GeoImage, row_starts: np.ndarray, col_starts: np.ndarray) -> np.ndarray:
    """Box-averaged ``rgb_uint8`` over valid pixels, built stripe by stripe."""
    h, _ = image.shape
    oh, ow = len(row_starts), len(col_starts)
    bands = [image.band_index(role) for role in ("R", "G", "B")]
    white = np.float32(image.white_point)
    out = np.empty((oh, ow, 3), dtype=np.uint8)
    group_rows = max(1, math.ceil(h / oh))
    step = max(1, _STRIPE_ROWS // group_rows)
    bounds = np.append(row_starts, h)
    for o0 in range(0, oh, step):
        o1 = min(oh, o0 + step)
        a, b = int(bounds[o0]), int(bounds[o1])
        rel = row_starts[o0:o1] - a
        valid = image.valid[a:b]
        n = np.add.reduceat(np.add.reduceat(valid.astype(np.float32), rel, axis=0),
                            col_starts, axis=1)
        empty = n == 0
        n[empty] = 1.0
        for ch, band in enumerate(bands):
            v = np.clip(image.data[band, a:b].astype(np.float32) / white, 0, 1)
            v[~valid] = 0.0
            s = np.add.reduceat(np.add.reduceat(v, rel, axis=0), col_starts, axis=1)
            out[o0:o1, :, ch] = (np.clip(s / n, 0, 1) * 255 + 0.5).astype(np.uint8)
        out[o0:o1][empty] = NODATA_RGB
    return out


def _query_of(region: Region) -> str:
    return str(region.query or region.label or "region")


def _paint_display(region: Region, target: np.ndarray, row_group: np.ndarray,
                   col_group: np.ndarray, shape: tuple[int, int]) -> None:
    """OR a region's mask into the display-size ``target`` (any coverage marks a pixel)."""
    (r0, c0), (ch, cw) = region.origin, region.crop.shape
    h, w = shape
    ra, rb = max(0, r0), min(h, r0 + ch)
    ca, cb = max(0, c0), min(w, c0 + cw)
    if rb <= ra or cb <= ca:
        return
    crop = region.crop[ra - r0 : rb - r0, ca - c0 : cb - c0]
    rg, cg = row_group[ra:rb], col_group[ca:cb]
    rcut = np.flatnonzero(np.diff(rg, prepend=-1))
    ccut = np.flatnonzero(np.diff(cg, prepend=-1))
    small = np.logical_or.reduceat(np.logical_or.reduceat(crop, rcut, axis=0), ccut, axis=1)
    target[rg[0] : rg[-1] + 1, cg[0] : cg[-1] + 1] |= small


# ---------------------------------------------------------------------------- table
def region_rows(image: Image, answer: Answer | None) -> list[list]:
    """One row per evidence region, in :data:`REGION_COLUMNS` order.

    Area is in the region's unit (``"m2"`` or ``"px"``); the centroid is given in WGS84
    lon/lat (``None`` when the image has no CRS) and in pixel column/row.
    """
    if answer is None or not answer.regions:
        return []
    centroids = [r.centroid for r in answer.regions]
    lonlats = _lonlats(image, centroids)
    rows = []
    for region, (col, row), lonlat in zip(answer.regions, centroids, lonlats, strict=True):
        lon, lat = (None, None) if lonlat is None else (round(lonlat[0], 6), round(lonlat[1], 6))
        rows.append([
            int(region.id), str(region.query), str(region.label),
            round(float(region.area_m2), 1), str(region.area_unit),
            round(float(region.score), 3), lon, lat, round(col, 1), round(row, 1),
        ])
    return rows


def _lonlats(image: Image, points: list[tuple[float, float]]
             ) -> list[tuple[float, float] | None]:
    """WGS84 (lon, lat) of pixel (col, row) points, ``None`` each without a CRS."""
    if image.crs is None or not points:
        return [None] * len(points)
    from rasterio.warp import transform as warp

    xy = [image.pixel_to_crs(c, r) for c, r in points]
    lons, lats = warp(image.crs, "EPSG:4326", [p[0] for p in xy], [p[1] for p in xy])
    return [(float(x), float(y)) for x, y in zip(lons, lats, strict=True)]


# ---------------------------------------------------------------------------- files
def evidence_geojson(image: Image, answer: Answer) -> dict:
    """The evidence regions as an RFC 7946 FeatureCollection in WGS84 (lon, lat).

    Exterior rings are counter-clockwise, coordinates have 7 decimals, and each feature's
    properties are the region summary plus the question and the answer text. Regions
    without a polygon are left out. Raises :class:`InputError` when the image has no CRS.
    """
    if image.crs is None:
        raise InputError(
            f"{image.name} has no coordinate reference system, so its regions cannot be "
            "placed on the globe as GeoJSON; use the GeoPackage (pixel or local coordinates)"
        )
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape
    from shapely.geometry.polygon import orient

    features = []
    for region in answer.regions:
        poly = polygonal(region.polygon)
        if poly is None:
            continue
        geom = shape(transform_geom(image.crs, "EPSG:4326", mapping(poly)))
        geom = polygonal(geom)
        if geom is None:
            continue
        if geom.geom_type == "MultiPolygon":
            from shapely.geometry import MultiPolygon

            geom = MultiPolygon([orient(p, 1.0) for p in geom.geoms])
        else:
            geom = orient(geom, 1.0)
        props = {**region.summary(), "question": answer.question, "answer": answer.answer}
        features.append({
            "type": "Feature",
            "id": int(region.id),
            "geometry": _rounded(mapping(geom)),
            "properties": _plain(props),
        })
    out: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if features:
        xs, ys = [], []
        for f in features:
            for x, y in _points(f["geometry"]["coordinates"]):
                xs.append(x)
                ys.append(y)
        out["bbox"] = [min(xs), min(ys), max(xs), max(ys)]
    return out


def write_evidence(image: Image, answer: Answer, out_dir: Path) -> list[Path]:
    """Write the evidence files into ``out_dir`` (created) and return their paths.

    In order: ``evidence.geojson`` (WGS84, see :func:`evidence_geojson`; only when the
    image has a CRS), ``evidence.gpkg`` (layer ``regions``, MultiPolygons in the image's
    own CRS, or without a CRS in the image's pixel/local coordinates; fields
    :data:`GPKG_FIELDS`) and ``answer.json`` (the whole answer with region geometry).
    Regions without a polygon are left out of both vector files; an answer without
    regions gives empty but valid ones. A failed answer gets ``answer.json`` only (its
    error and every attempt). Existing files of these names are replaced.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if answer.error is None and image.crs is not None:
        path = out_dir / "evidence.geojson"
        path.write_text(json.dumps(evidence_geojson(image, answer), indent=1), encoding="utf-8")
        written.append(path)
    if answer.error is None:
        crs = image.crs.to_wkt() if image.crs is not None else None
        written.append(write_regions_gpkg(answer, out_dir / "evidence.gpkg", crs))
    path = out_dir / "answer.json"
    path.write_text(answer.to_json(geometry=True, indent=2), encoding="utf-8")
    written.append(path)
    return written


def _rounded(obj: Any, ndigits: int = 7) -> Any:
    """GeoJSON geometry mapping with coordinates as lists rounded to ``ndigits``."""
    if isinstance(obj, dict):
        return {k: _rounded(v, ndigits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v, ndigits) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return round(float(obj), ndigits)
    return obj


def _points(coords: Any):
    """Every (x, y) in nested GeoJSON coordinates."""
    if coords and isinstance(coords[0], (int, float)):
        yield coords[0], coords[1]
        return
    for c in coords:
        yield from _points(c)


def _plain(obj: Any) -> Any:
    """JSON-ready copy: numpy scalars to Python, tuples to lists, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


# ---------------------------------------------------------------------------- reply
def answer_markdown(answer: Answer, translate: Callable[[str], str] | None = None,
                    hide: Collection[str] = ()) -> str:
    """The chat reply for an answer, as Markdown.

    A successful answer gives the answer text in bold with what it counted, measured or
    compared (:func:`viper_rs.core.wording.answer_parts`), a line naming the evidence (region
    counts per query, detector and planner) and its notes in one collapsed ``<details>``
    block (``Notes (n)``): the first five, then the rest (up to the answer's
    :data:`~viper_rs.core.answer_json.MAX_NOTES`) in a nested collapsed block; notes in ``hide`` are
    left out. A failed one
    starts with ``"Could not answer:"`` and adds a hint for planning and tool errors.
    ``translate`` rewrites notes and error messages for the reader (e.g. CLI flags as the
    app's field names). Text from the user or from programs is escaped so it cannot add
    markup; code spans in notes stay code.
    """
    tr = translate or (lambda text: text)
    if answer.error is not None:
        return _error_markdown(answer, tr)
    before, after = answer_parts(answer)
    head = (f"{_edge_escaped(before)}**{escape_markdown(tr(answer.answer))}**"
            f"{_edge_escaped(after)}")
    lines = [head, "", _evidence_line(answer)]
    notes = [str(n) for n in answer.notes if str(n).strip() and str(n) not in hide]
    if notes:
        def item(note: str) -> str:
            return f"- {note_markdown(_truncate(tr(note), _MAX_NOTE_CHARS))}"

        lines += ["", f"<details><summary>Notes ({len(notes)})</summary>", ""]
        lines += [item(note) for note in notes[:_NOTES_SHOWN]]
        more = notes[_NOTES_SHOWN:MAX_NOTES]
        if more:  # the rest, one click further: reachable, without a long first list
            lines += ["", f"<details><summary>… and {len(more)} more</summary>", ""]
            lines += [item(note) for note in more]
            lines += ["", "</details>"]
        if len(notes) > MAX_NOTES:
            lines += ["", f"{len(notes) - MAX_NOTES:,} more notes are not listed (an answer "
                      f"lists its first {MAX_NOTES})."]
        lines += ["", "</details>"]
    return "\n".join(lines)


def _edge_escaped(text: str) -> str:
    """:func:`escape_markdown` keeping one leading and one trailing space."""
    if not text.strip():
        return " " if text else ""
    lead = " " if text[:1].isspace() else ""
    trail = " " if text[-1:].isspace() else ""
    return f"{lead}{escape_markdown(text)}{trail}"


def note_markdown(text: str) -> str:
    """One note as Markdown: escaped like :func:`escape_markdown`, except that
    `` `code` `` spans become ``<code>`` (their text escaped as HTML)."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code spans
        return escape_markdown(text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{html.escape(' '.join(part.split()), quote=False)}</code>")
        else:
            lead = " " if part[:1].isspace() and i else ""
            trail = " " if part[-1:].isspace() and i < len(parts) - 1 else ""
            out.append(f"{lead}{escape_markdown(part)}{trail}" if part.strip() else " ")
    return "".join(out)


def _evidence_line(answer: Answer) -> str:
    counts = Counter(_query_of(r) for r in answer.regions)
    n = len(answer.regions)
    parts = [f"{n} region{'' if n == 1 else 's'}"]
    if counts:
        parts[0] += ": " + ", ".join(f"{c} {escape_markdown(q)}" for q, c in counts.items())
    if answer.detector:
        parts.append(f"detector {escape_markdown(answer.detector)}")
    if answer.planner:
        parts.append(f"planner {escape_markdown(answer.planner)}")
    total = answer.timings.get("total_ms") if answer.timings else None
    if isinstance(total, (int, float)) and math.isfinite(total):
        parts.append(f"{total / 1000:.2f} s")
    return "Evidence: " + " · ".join(parts)


def _error_markdown(answer: Answer, translate: Callable[[str], str]) -> str:
    error = answer.error or {}
    kind = str(error.get("type", "error"))
    text = str(error.get("message", "")).strip() or "unknown error"
    message = escape_markdown(_truncate(translate(text), _MAX_ERROR_CHARS))
    if kind == "planning":
        forms = "\n".join(f"- {f}" for f in _QUESTION_FORMS)
        return (
            "Could not answer: the question could not be turned into a program.\n\n"
            f"{message}\n\nTry one of the supported question forms:\n{forms}\n\n"
            "Other questions need an LLM planner: set its endpoint and model under Settings."
        )
    if kind == "tool":
        return (
            f"Could not answer: {message}\n\n"
            "Ask about a concept the detector supports, e.g. building, road, water, tree, "
            "grass or parking."
        )
    return f"Could not answer: {message}"


def _truncate(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


_MD_SPECIAL = re.compile(r"([\\*_\[\]~|])")
#: What :func:`plain_text` reads in a chat message, in order of precedence: an HTML code
#: element, a Markdown code span, a backslash escape, a details/summary tag, an emphasis
#: marker.
_MARKUP = re.compile(r"<code>(?P<html_code>.*?)</code>|`(?P<md_code>[^`]*)`"
                     r"|\\(?P<escaped>[!-/:-@\[-`{-~])|</?(?:details|summary)>|\*\*?")


def plain_text(markdown: str) -> str:
    """The text a reader sees in a chat message of the app (:func:`answer_markdown`,
    :func:`escape_markdown` and the app's templates): code spans keep their text, escapes
    and HTML entities are undone, emphasis markers and the notes block's tags are dropped.
    For files such as the session export, where the text is not rendered."""
    out, end = [], 0
    for m in _MARKUP.finditer(markdown):
        out.append(html.unescape(markdown[end:m.start()]))
        if m.group("html_code") is not None:
            out.append(html.unescape(m.group("html_code")))
        else:
            out.append(m.group("md_code") or m.group("escaped") or "")
        end = m.end()
    out.append(html.unescape(markdown[end:]))
    # Spaces collapse as the chat shows them.
    return "\n".join(" ".join(line.split())
                     for line in "".join(out).split("\n"))


def escape_markdown(text: Any) -> str:
    """``text`` on one line with Markdown emphasis/link characters and HTML neutralised,
    and control characters and bidi overrides (a file name's) shown as escapes
    (:func:`viper_rs.core.textsafe.safe_text`)."""
    s = safe_text(" ".join(str(text).split()))
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return html.escape(s, quote=False).replace("`", "&#96;")
