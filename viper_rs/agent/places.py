"""Places: the answer to a "where" program (one returning regions), ranked by area.

A program that returns a region list (``return find("water area")``) is answered with the
places it found, largest first: the text names the first few with their area and WGS84
centroid, and ``Answer.places`` lists up to :data:`MAX_PLACES` of them.
"""

from __future__ import annotations

from typing import Any

from viper_rs.core.image import Image
from viper_rs.core.regions import Region
from viper_rs.core.wording import plural, returned_label

#: Places listed in ``Answer.places`` (``places_total`` counts all).
MAX_PLACES = 100
#: Places named in the answer text.
TEXT_PLACES = 5
#: Key of a region in a program's plain return value.
REGION_KEY = "__region__"


def returned_region_ids(value: Any) -> list[int] | None:
    """Ids of the regions a program returned (a region or a list of regions, first
    occurrence order), or None when the value is something else."""
    if isinstance(value, dict) and REGION_KEY in value:
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) and REGION_KEY in v for v in value):
        return None
    ids: list[int] = []
    for v in value:
        rid = v.get(REGION_KEY)
        if isinstance(rid, int) and rid not in ids:
            ids.append(rid)
    return ids


def rank_places(regions: list[Region], image: Image | None, cap: int = MAX_PLACES
                ) -> list[dict[str, Any]]:
    """The first ``cap`` of ``regions`` ranked by area (largest first, then id) as plain
    records: rank, region id, label, area and unit, pixel centroid, WGS84 centroid (when
    the image is georeferenced) and the chips a region-scale object came from."""
    ranked = sorted(regions, key=lambda r: (-float(r.area_m2), r.id))[: max(0, int(cap))]
    cents = [r.centroid for r in ranked]
    lonlat = _lonlat(image, cents)
    out = []
    for i, (r, c) in enumerate(zip(ranked, cents, strict=True)):
        place: dict[str, Any] = {
            "rank": i + 1, "region_id": r.id, "label": r.label, "query": r.query,
            "area_m2": round(float(r.area_m2), 3), "area_unit": r.area_unit,
            "centroid_px": [round(c[0], 2), round(c[1], 2)],
        }
        if lonlat is not None:
            place["lon"], place["lat"] = round(lonlat[i][0], 7), round(lonlat[i][1], 7)
        chips = r.extra.get("chips") if isinstance(r.extra, dict) else None
        if chips:
            place["chips"] = list(chips)
            place["chip"] = chips[0] if len(chips) == 1 else None
        out.append(place)
    return out


def _lonlat(image: Image | None, cents: list[tuple[float, float]]
            ) -> list[tuple[float, float]] | None:
    """WGS84 (lon, lat) of pixel points, or None when there is no image or it has no CRS."""
    if image is None or image.crs is None or not image.georeferenced:
        return None
    if not cents:
        return []
    from rasterio.warp import transform as warp

    xy = [image.transform @ c for c in cents]
    xs, ys = warp(image.crs, "EPSG:4326", [p[0] for p in xy], [p[1] for p in xy])
    return [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]


def format_place(place: dict[str, Any]) -> str:
    """``"4,210 m2 at 47.0170 N, 99.1568 W"`` (pixel centroid without a CRS)."""
    unit = place.get("area_unit", "m2")
    size = f"{place['area_m2']:,.0f} {unit}"
    if "lat" in place:
        lat, lon = place["lat"], place["lon"]
        return (f"{size} at {abs(lat):.4f} {'N' if lat >= 0 else 'S'}, "
                f"{abs(lon):.4f} {'E' if lon >= 0 else 'W'}")
    col, row = place["centroid_px"]
    return f"{size} at pixel ({col:.0f}, {row:.0f})"


def places_text(n: int, noun: str, places: list[dict[str, Any]], shown: int = TEXT_PLACES) -> str:
    """``"5 water areas; largest: 1. 4,210 m2 at ...; 2. ..."`` (``noun`` already in the
    number's form); ``"0 water areas"`` when there is none."""
    text = f"{n} {noun}"
    if not places:
        return text
    if n == 1:
        return f"{text}: {format_place(places[0])}"
    items = "; ".join(f"{p['rank']}. {format_place(p)}" for p in places[:shown])
    more = f" (and {n - shown} more)" if n > shown else ""
    return f"{text}; largest: {items}{more}"


def add_places(answer: Any, value: Any, regions: dict[int, Region], image: Image) -> None:
    """Give ``answer`` (of a program that returned ``value``) its places and their text,
    when ``value`` is a region or region list; its value and kind stay as they are."""
    ids = returned_region_ids(value)
    if ids is None:
        return
    found = [regions[i] for i in ids if i in regions]
    answer.places = rank_places(found, image)
    answer.places_total = len(found)
    answer.answer = places_text(len(found), _noun(answer, found), answer.places)


def _noun(answer: Any, found: list[Region]) -> str:
    """What the returned list holds, in the number's form: the calls' reading of the call
    that made it ("large buildings"), else the regions' labels."""
    n = len(found)
    label = returned_label(answer)
    if label is not None:
        return label.text(n)
    labels = sorted({str(r.label) for r in found if r.label})
    if len(labels) == 1:
        return plural(labels[0]) if n != 1 else labels[0]
    word = "regions" if n != 1 else "region"
    return f"{word} ({', '.join(labels)})" if labels else word
