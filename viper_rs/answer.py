"""Answer: what a person reads, the value, and all the evidence behind it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from viper_rs.regions import Region

KINDS = ("presence", "count", "area", "comparison", "other")


@dataclass
class Answer:
    """One answered (or failed) question. ``error`` is None or ``{type, message}``.

    ``attempts`` lists every program tried for the question, in order (the answer is the
    last one's): ``{attempt, planner, program, error, cached, plan_ms, run_ms, ...}`` plus,
    for LLM plans, model, endpoint, prompt hash and size, the raw reply and token usage.
    """

    question: str | None
    answer: str
    value: bool | int | float | str | None
    kind: str
    program: str | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    error: dict[str, str] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    detector: str | None = None
    planner: str | None = None
    notes: list[str] = field(default_factory=list)
    image: dict[str, Any] = field(default_factory=dict)
    area_unit: str = "m2"
    stdout: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the question was answered without error."""
        return self.error is None

    def to_dict(self, geometry: bool = False) -> dict[str, Any]:
        """Plain JSON-able dict; ``geometry`` adds each region's polygon (GeoJSON, image CRS)."""
        regions = []
        for r in self.regions:
            d = r.summary()
            if geometry and r.polygon is not None:
                from shapely.geometry import mapping

                d["geometry"] = mapping(r.polygon)
            regions.append(d)
        return {
            "question": self.question,
            "answer": self.answer,
            "value": self.value,
            "kind": self.kind,
            "area_unit": self.area_unit,
            "program": self.program,
            "trace": self.trace,
            "regions": regions,
            "error": self.error,
            "timings": self.timings,
            "detector": self.detector,
            "planner": self.planner,
            "notes": self.notes,
            "image": self.image,
            "stdout": self.stdout,
            "attempts": self.attempts,
        }

    def to_json(self, geometry: bool = False, indent: int | None = None) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(geometry=geometry), indent=indent, default=_json_default)

    def to_geojson(self) -> dict[str, Any]:
        """FeatureCollection of the evidence regions (image CRS)."""
        return {
            "type": "FeatureCollection",
            "features": [r.to_geojson_feature() for r in self.regions],
        }


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


def format_area(value: float, unit: str) -> str:
    """``"1234.5 m2"``, or pixels with a hint when the image has no ground size."""
    if unit == "m2":
        return f"{value:.1f} m2"
    return f"{value:.0f} px (the image has no ground size; give its GSD, e.g. --gsd 0.3, to get m2)"


def normalise(value: Any, kind_hint: str | None, area_unit: str) -> tuple[str, Any, str]:
    """Map a program's return value to (text, value, kind)."""
    hint = kind_hint if kind_hint in KINDS else None
    if isinstance(value, bool):
        kind = hint if hint in ("presence", "comparison") else "presence"
        return ("yes" if value else "no"), value, kind
    if isinstance(value, int):
        if hint == "area":
            return format_area(float(value), area_unit), float(value), "area"
        return str(value), value, hint if hint in ("count", "other") else "count"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value), value, "other"
        if hint in (None, "area"):
            return format_area(value, area_unit), value, "area"
        return f"{value:g}", value, hint
    if isinstance(value, str):
        return value, value, hint or "other"
    if isinstance(value, list) and all(isinstance(v, dict) and "__region__" in v for v in value):
        labels = sorted({str(v.get("label", "")) for v in value})
        text = f"{len(value)} region{'s' if len(value) != 1 else ''}"
        if labels and labels != [""]:
            text += f" ({', '.join(labels)})"
        return text, len(value), "other"
    if isinstance(value, dict) and "__region__" in value:
        return f"1 region ({value.get('label', '')})", 1, "other"
    text = json.dumps(value, default=str)
    if len(text) > 2000:
        text = text[:2000] + "..."
    return text, text, "other"
