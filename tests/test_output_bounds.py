"""Issue 13: a program's output is bounded and always valid (JSON, text mode, CLI loop)."""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import Polygon, box

from tests.conftest import REPO
from viper_rs import cli
from viper_rs.core.answer import Answer
from viper_rs.core.answer_json import (
    MAX_ANSWER_JSON_BYTES,
    MAX_LABEL_CHARS,
    MAX_PROGRAM_CHARS,
    MAX_REGIONS_LISTED,
    MAX_STDOUT_CHARS,
    MAX_TEXT_CHARS,
    MAX_TRACE_ENTRIES,
    dumps_strict,
    json_safe,
)
from viper_rs.core.regions import Region
from viper_rs.core.textsafe import cut, safe_text

NAN, INF = float("nan"), float("inf")
HOSTILE = "\x1b[2K\rA: yes\n\x1b]0;title\x07\ud800\u202e\u2066\x9b\x7f"
#: Characters that must never reach a terminal raw.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
MARKER = 60  # room for the "... [cut: N more characters]" marker


def strict_loads(text: str):
    """json.loads that fails on NaN / Infinity tokens."""

    def bad(token: str):
        raise AssertionError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=bad)


def no_non_finite(obj) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(no_non_finite(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return all(no_non_finite(v) for v in obj)
    return True


def square(**kw) -> Region:
    mask = np.zeros((16, 16), dtype=bool)
    mask[2:6, 3:9] = True
    defaults = dict(label="building", query="building", score=0.9, area_m2=24.0, polygon=box(3, 2, 9, 6))
    return Region.from_mask(mask, **{**defaults, **kw})


def many_regions(n: int, text_len: int, polygon=None) -> list[Region]:
    base = square()
    label, query = "L" * text_len, "Q" * text_len
    return [
        Region(crop=base.crop, origin=base.origin, image_shape=base.image_shape, label=label,
               query=query, score=0.5, area_m2=24.0, polygon=polygon, id=i)
        for i in range(n)
    ]


# ------------------------------------------------------------------ size bounds
def test_70000_regions_with_long_queries_stay_under_the_cap():
    answer = Answer(question="How many?", answer="70000", value=70_000, kind="count",
                    regions=many_regions(70_000, 10_000))
    text = answer.to_json()
    assert len(text.encode()) <= MAX_ANSWER_JSON_BYTES
    out = strict_loads(text)
    assert len(out["regions"]) == MAX_REGIONS_LISTED and out["regions_total"] == 70_000
    assert "1,000 of 70,000 regions listed (regions_total counts all)" in out["notes"]
    assert all(len(r["query"]) <= MAX_LABEL_CHARS + MARKER for r in out["regions"])
    assert all(len(r["label"]) <= MAX_LABEL_CHARS + MARKER for r in out["regions"])
    assert out["regions"][0]["query"].startswith("Q" * MAX_LABEL_CHARS + "... [cut: 9,800 more")
    d = answer.to_dict()
    assert len(d["regions"]) == MAX_REGIONS_LISTED and d["regions_total"] == 70_000


def test_geometry_is_dropped_beyond_the_budget_and_the_cap():
    n = 12_000  # ~0.5 MB of GeoJSON per polygon
    ring = [(1000 * math.cos(2 * math.pi * k / n) + 0.123456789,
             1000 * math.sin(2 * math.pi * k / n) + 0.987654321) for k in range(n)]
    regions = many_regions(20, 10, polygon=Polygon(ring))
    answer = Answer(question="q", answer="20", value=20, kind="count", regions=regions)
    for indent in (None, 2):
        text = answer.to_json(geometry=True, indent=indent)
        assert len(text) <= MAX_ANSWER_JSON_BYTES
        out = strict_loads(text)
        kept = [r for r in out["regions"] if "geometry" in r]
        dropped = [r for r in out["regions"] if r.get("geometry_omitted")]
        assert kept and dropped and len(kept) + len(dropped) == 20
        assert kept[0]["geometry"]["type"] == "Polygon"
        assert any(n.startswith(f"geometry omitted for {len(dropped)} of 20 listed regions")
                   for n in out["notes"])
    small = Answer(question="q", answer="1", value=1, kind="count", regions=[square(id=0)])
    out = strict_loads(small.to_json(geometry=True))
    assert out["regions"][0]["geometry"]["type"] == "Polygon"
    assert not any("geometry omitted" in n for n in out["notes"])


def test_long_strings_and_long_lists_are_cut():
    big = "x" * 1_000_000
    answer = Answer(
        question=big, answer=big, value=big, kind="other", program=big, stdout=big,
        error={"type": "sandbox", "message": big}, notes=[big] * 500,
        trace=[{"tool": "find", "args": [big] * 100, "result": {"k": [big] * 100}}] * 10_000,
        attempts=[{"attempt": i, "program": big, "response": big, "error": None} for i in range(100)],
        timings={f"t{i}": 1.0 for i in range(10_000)},
    )
    text = answer.to_json()
    assert len(text) <= MAX_ANSWER_JSON_BYTES
    out = strict_loads(text)
    for key in ("question", "answer", "value"):
        assert len(out[key]) <= MAX_TEXT_CHARS + MARKER
    assert len(out["error"]["message"]) <= MAX_TEXT_CHARS + MARKER
    assert len(out["program"]) <= MAX_PROGRAM_CHARS + MARKER
    assert len(out["stdout"]) <= MAX_STDOUT_CHARS + MARKER
    assert all(len(n) <= MAX_TEXT_CHARS + MARKER for n in out["notes"])
    assert len(out["notes"]) < 60 and "50 of 500 notes listed" in out["notes"]
    assert len(out["trace"]) == MAX_TRACE_ENTRIES and out["trace_total"] == 10_000
    assert "200 of 10,000 trace entries listed" in out["notes"]
    assert len(out["attempts"]) == 20 and out["attempts_total"] == 100
    assert out["attempts"][-1]["attempt"] == 99  # the last attempt (the answer's) is kept
    assert len(out["timings"]) <= 51


def test_worst_case_escaping_still_fits_the_cap():
    """Astral characters take 12 bytes each in ASCII JSON: the tight caps take over."""
    face = "\U0001f600"
    regions = many_regions(5_000, 1)
    for r in regions:
        r.label = r.query = face * 10_000
    answer = Answer(
        question=face * 10**6, answer=face * 10**6, value="\x00" * 10**6, kind="other",
        notes=[face * 20_000] * 100, stdout="\x01" * 10**6, program="\x02" * 10**6,
        trace=[{"tool": "x", "args": [face * 1000] * 100}] * 300, regions=regions,
        attempts=[{"program": face * 100_000, "response": face * 10**6}] * 50,
    )
    text = answer.to_json(indent=2)
    assert len(text) <= MAX_ANSWER_JSON_BYTES and text.isascii()
    out = strict_loads(text)
    assert out["regions_total"] == 5_000 and len(out["regions"]) <= MAX_REGIONS_LISTED
    assert any("listed with tighter caps" in n for n in out["notes"])


# ------------------------------------------------------------------ strict JSON
def test_non_finite_floats_become_null_everywhere():
    answer = Answer(
        question="q", answer="nan", value=NAN, kind="other",
        trace=[{"tool": "area", "args": [INF, [-INF, NAN]], "kwargs": {"x": NAN},
                "result": {"v": NAN, "arr": np.array([NAN, 1.0])}, "ms": NAN}],
        regions=[square(id=1, score=NAN, area_m2=INF)],
        timings={"run_ms": NAN, "total_ms": INF, "plan_ms": np.float32("nan")},
        attempts=[{"attempt": 1, "plan_ms": INF, "run_ms": NAN, "error": None}],
        image={"gsd": NAN}, error=None,
    )
    for text in (answer.to_json(), answer.to_json(indent=2), answer.to_json(geometry=True)):
        assert not re.search(r"\bNaN\b|Infinity", text)
        out = strict_loads(text)
        assert out["value"] is None and out["timings"]["run_ms"] is None
        assert out["trace"][0]["args"] == [None, [None, None]]
        assert out["trace"][0]["result"] == {"v": None, "arr": [None, 1.0]}
        assert out["regions"][0]["score"] is None and out["regions"][0]["area_m2"] is None
    assert no_non_finite(answer.to_dict())
    json.dumps(answer.to_dict(), allow_nan=False)  # to_dict is strict too


def test_lone_surrogates_and_odd_objects_serialise():
    class Unprintable:
        def __str__(self):
            raise RuntimeError("no")

    loop: list = []
    loop.append(loop)
    answer = Answer(question="\ud800?", answer="\udfff", value="\ud83d", kind="other",
                    trace=[{"tool": "t", "args": [Unprintable(), loop, 10**5000, {1, 2}, (3,)],
                            "kwargs": {"k": b"bytes"}}], notes=["\ud800"])
    text = answer.to_json()
    assert text.isascii()
    out = strict_loads(text)
    assert out["question"] == "\ud800?" and out["value"] == "\ud83d"
    args = out["trace"][0]["args"]
    assert args[0] == "<unprintable Unprintable>" and args[2] is None and args[3] == [1, 2]
    assert dumps_strict({"a": NAN, (1, 2): -INF, "n": np.int64(3)}) == '{"a": null, "(1, 2)": null, "n": 3}'
    assert json_safe(list(range(10)), max_items=3) == [0, 1, 2, "... 7 more items not listed"]


# ------------------------------------------------------------------ terminal text
def test_safe_text_escapes_controls_bidi_and_surrogates():
    s = safe_text(HOSTILE + "\tok")
    assert not RAW.search(s) and "\t" in s
    assert s.startswith("\\x1b[2K\\rA: yes\\n\\x1b]0;title\\x07\\ud800\\u202e\\u2066\\x9b\\x7f")
    assert safe_text("caf\u00e9 \U0001f600", encoding="ascii") == "caf\\xe9 \\U0001f600"
    assert safe_text("caf\u00e9", encoding="utf-8") == "caf\u00e9"
    assert safe_text("a\tb", keep="") == "a\\tb"
    assert safe_text("x" * 100, 10).startswith("x" * 10 + "... [cut: 90 more")
    assert cut("abc", 5) == "abc" and safe_text(None) == "None"


def hostile_answer() -> Answer:
    return Answer(
        question="q" + HOSTILE, answer=HOSTILE, value=HOSTILE, kind="other",
        program=f"def execute_command(image):\n    return '{HOSTILE}'\n",
        regions=[square(id=0, label="bad" + HOSTILE), square(id=1, label="building")],
        error={"type": "sandbox" + HOSTILE, "message": "boom" + HOSTILE},
        notes=["note" + HOSTILE],
        attempts=[{"attempt": 1, "planner": "llm" + HOSTILE, "error": {"type": "x", "message": HOSTILE}},
                  {"attempt": 2, "planner": "llm", "error": None, "cached": True}],
        detector="d" + HOSTILE, planner="p" + HOSTILE, timings={"total_ms": NAN},
    )


@pytest.mark.parametrize("encoding", ["ascii", "utf-8", "latin-1"])
def test_emit_text_mode_cannot_move_the_cursor_or_raise(monkeypatch, encoding):
    buf = io.BytesIO()
    out = io.TextIOWrapper(buf, encoding=encoding, errors="strict")
    monkeypatch.setattr(sys, "stdout", out)
    cli._emit(hostile_answer(), argparse.Namespace(json=False, geometry=False))
    out.flush()
    text = buf.getvalue().decode(encoding)
    assert not RAW.search(text.replace("\n", ""))
    lines = text.splitlines()
    assert [ln for ln in lines if ln.startswith("A: ")] == [lines[1]]
    assert lines[0].startswith("Q: q\\x1b[2K\\rA: yes\\n")
    assert any(ln.startswith("   error (sandbox\\x1b") for ln in lines)
    assert any("bad\\x1b" in ln and ln.startswith("   regions: ") for ln in lines)
    assert any(ln.startswith("   note: note\\x1b") for ln in lines)
    assert any(ln.startswith("   attempt 1 (llm\\x1b") for ln in lines)
    assert lines[-1].endswith("nan ms")


def test_emit_text_mode_bounds_many_labels(monkeypatch, capsys):
    regions = many_regions(3, 10)
    regions += [square(id=10 + i, label=f"label{i:03d}" + "z" * 5000) for i in range(100)]
    answer = Answer(question="q", answer="a", value=1, kind="count", regions=regions)
    cli._emit(answer, argparse.Namespace(json=False, geometry=False))
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("   regions: "))
    assert len(line) < 5_000 and line.endswith("and 81 more labels")


# ------------------------------------------------------------------ the CLI loop
@pytest.fixture(scope="module")
def scene_tif(tmp_path_factory) -> Path:
    from viper_rs.core.raster_write import write_geotiff
    from viper_rs.synthetic import make_scene

    scene = make_scene(seed=0)
    return write_geotiff(scene.image, tmp_path_factory.mktemp("img") / "s.tif")


class FakeAgent:
    """Stands in for viper_rs.agent.Agent: returns prepared answers in order."""

    answers: list[Answer] = []

    def __init__(self, *a, **k):
        self.detector = type("D", (), {"name": "fake"})()
        self._it = iter(type(self).answers)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def run_program(self, image, source, question=None):
        return next(self._it)

    def ask(self, image, question):
        return next(self._it)


class Exploding(Answer):
    def to_json(self, *a, **k):
        raise MemoryError

    def __getattribute__(self, name):
        if name == "notes":
            raise RuntimeError("notes exploded")
        return super().__getattribute__(name)


def good(value: int) -> Answer:
    return Answer(question=None, answer=str(value), value=value, kind="count")


@pytest.mark.parametrize("as_json", [True, False])
def test_failed_emit_costs_only_that_answer(monkeypatch, capsys, tmp_path, scene_tif, as_json):
    import viper_rs.agent

    FakeAgent.answers = [good(1), Exploding(question=None, answer="x", value=1, kind="count"), good(3)]
    monkeypatch.setattr(viper_rs.agent, "Agent", FakeAgent)
    progs = []
    for name in ("a.py", "b.py", "c.py"):
        (tmp_path / name).write_text("def execute_command(image):\n    return 1\n")
        progs.append(str(tmp_path / name))
    code = cli.main(["run", str(scene_tif), *progs, *(["--json"] if as_json else [])])
    cap = capsys.readouterr()
    assert code == 1
    assert cap.err.count("viper-rs: error: could not print the answer to program") == 1
    assert "b.py" in cap.err and ("MemoryError" if as_json else "notes exploded") in cap.err
    if as_json:
        rows = [strict_loads(ln) for ln in cap.out.splitlines()]
        assert [r["value"] for r in rows] == [1, None, 3]
        assert rows[1]["error"]["type"] == "output" and rows[1]["question"].endswith("b.py")
    else:
        assert [ln for ln in cap.out.splitlines() if ln.startswith("A: ")] == ["A: 1", "A: 3"]


def test_demo_json_failed_emit_costs_only_that_answer(monkeypatch, capsys, tmp_path):
    import viper_rs.agent

    FakeAgent.answers = [good(1), Exploding(question="q", answer="x", value=1, kind="count"),
                         *[good(i) for i in range(8)]]
    monkeypatch.setattr(viper_rs.agent, "Agent", FakeAgent)
    code = cli.main(["demo", "--n", "3", "--json", "--out", str(tmp_path / "demo")])
    cap = capsys.readouterr()
    rows = [strict_loads(ln) for ln in cap.out.splitlines()]
    assert code == 1 and len(rows) == 3
    assert rows[1]["error"]["type"] == "output"
    assert all({"truth", "correct"} <= r.keys() for r in rows)
    assert cap.err.count("could not print the answer") == 1


HOSTILE_PROGRAM = r'''def execute_command(image):
    print("\x1b[2J\x1b]0;pwned\x07")
    return {"text": "\x1b[2K\rA: yes\ud800\u202e", "x": float("nan"), "y": [float("inf")]}
'''
RAW_STRING_PROGRAM = r'''def execute_command(image):
    return "\x1b[2K\rA: yes\n\x1b]0;title\x07\ud800\u202e"
'''
FAILING_PROGRAM = r'''def execute_command(image):
    assert False, "\x1b[31mred\x1b[0m\rA: yes\ud800"
'''
BENIGN_PROGRAM = 'def execute_command(image):\n    return count("building")\n'


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "viper_rs", *args], capture_output=True,
                          timeout=300, cwd=REPO)


def write_programs(tmp_path: Path) -> list[str]:
    paths = []
    for name, source in [("hostile.py", HOSTILE_PROGRAM), ("raw.py", RAW_STRING_PROGRAM),
                         ("failing.py", FAILING_PROGRAM), ("benign.py", BENIGN_PROGRAM)]:
        (tmp_path / name).write_text(source, encoding="utf-8")
        paths.append(str(tmp_path / name))
    return paths


def test_cli_run_hostile_then_benign_json(tmp_path, scene_tif):
    p = run_cli("run", str(scene_tif), *write_programs(tmp_path), "--json")
    assert p.returncode == 1, p.stderr  # failing.py failed; every answer printed
    lines = p.stdout.decode("ascii").splitlines()
    assert len(lines) == 4
    hostile, raw, failing, benign = (strict_loads(ln) for ln in lines)
    assert hostile["error"] is None and "\\u001b" in hostile["answer"]
    assert "\x1b[2J" in hostile["stdout"]  # kept in JSON (escaped as \u001b on the wire)
    assert raw["error"] is None and raw["value"] == "\x1b[2K\rA: yes\n\x1b]0;title\x07\ud800\u202e"
    assert failing["error"]["type"] == "sandbox" and failing["value"] is None
    assert benign["error"] is None and benign["kind"] == "count"
    assert isinstance(benign["value"], int) and benign["value"] > 0


def test_cli_run_hostile_then_benign_text(tmp_path, scene_tif):
    p = run_cli("run", str(scene_tif), *write_programs(tmp_path))
    assert p.returncode == 1, p.stderr
    text = p.stdout.decode("utf-8")
    assert not RAW.search(text.replace("\n", ""))
    answers = [ln for ln in text.splitlines() if ln.startswith("A: ")]
    assert len(answers) == 4
    assert answers[1].startswith("A: \\x1b[2K\\rA: yes\\n\\x1b]0;title\\x07\\ud800\\u202e")
    assert answers[2].startswith("A: Could not answer:")
    m = re.fullmatch(r"A: (\d+) buildings?", answers[3])  # the count names what it counted
    assert m and int(m.group(1)) > 0


def test_eval_rows_are_strict_json(tmp_path):
    from eval.rsvqa import _write_rows

    path = tmp_path / "predictions.jsonl"
    _write_rows(path, [{"question_id": 1, "value": NAN, "timings": {"ms": INF}, "answer": "\ud800"},
                       {"question_id": 2, "value": np.float64(2.5), "error": None}])
    rows = [strict_loads(ln) for ln in path.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["value"] is None and rows[0]["timings"]["ms"] is None
    assert rows[0]["answer"] == "\ud800" and rows[1]["value"] == 2.5


def test_evidence_answer_json_is_bounded_and_strict(tmp_path):
    from viper_rs.synthetic import make_scene
    from viper_rs.ui.evidence import write_evidence

    scene = make_scene(seed=0)
    regions = many_regions(1_500, 300, polygon=box(0, 0, 5, 5))
    answer = Answer(question="q" + HOSTILE, answer=HOSTILE, value=NAN, kind="other",
                    regions=regions, timings={"total_ms": INF},
                    error={"type": "sandbox", "message": HOSTILE})  # failed: answer.json only
    paths = write_evidence(scene.image, answer, tmp_path / "ev")
    text = (tmp_path / "ev" / "answer.json").read_text(encoding="utf-8")
    assert tmp_path / "ev" / "answer.json" in paths and len(text) <= MAX_ANSWER_JSON_BYTES
    out = strict_loads(text)
    assert out["value"] is None and len(out["regions"]) == MAX_REGIONS_LISTED
    assert out["regions"][0]["geometry"]["type"] == "Polygon"
