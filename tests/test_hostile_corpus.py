"""The hostile corpus (issue 23 acceptance): every case of ``tests/hostile_corpus.py``
through ``ask``, ``region`` and ``index build``. Each command must end in its expected
class: a clear refusal (exit 2, exactly one ``viper-rs: error:`` line naming the file, no
traceback) or a right answer (the answer of the same scene read cleanly), within the time
and memory limits, with no raw control characters in its output; ``index build`` skips a
bad file, lists it and still indexes the valid tile beside it.

Cases the other parts of issue 23 fix are marked in :data:`XFAIL` (one table, strict:
a case that starts passing fails until its mark is removed)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import hostile_corpus as hc
import pytest

from viper_rs.core.textsafe import safe_text

#: Per-command limits (seconds, resident MB of the worker running it).
TIME_LIMIT_S = float(os.environ.get("VIPER_RS_CORPUS_TIME_S", "30"))
MEMORY_LIMIT_MB = float(os.environ.get("VIPER_RS_CORPUS_MEMORY_MB", "2048"))
#: The budgets the runs are held to (image and region questions): below the kill limits,
#: so a run past its budget shows as a kill, and a refusal with the estimate is the
#: answer expected of anything larger.
BUDGETS = {"VIPER_RS_IMAGE_MAX_MEMORY_MB": str(int(MEMORY_LIMIT_MB * 0.7)),
           "VIPER_RS_IMAGE_MAX_TIME_S": str(int(TIME_LIMIT_S * 0.7)),
           "VIPER_RS_REGION_MAX_MEMORY_MB": str(int(MEMORY_LIMIT_MB * 0.7))}
#: Raw terminal controls (line ends of the output's own lines aside), DEL, C1, bidi.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")

#: (case, command) -> why it fails on this branch: the part of issue 23 that fixes it.
#: The lead removes a mark when that part is merged (the marks are strict).
_GEOREF = "issue 23 georef: georeference values trusted"
_GATE = "issue 23 gate: any GDAL format / special file opens behind .tif"
_MEMORY = "issue 23 memory: cost not estimated before decoding"
_REGION = "issue 23 region: region inputs and stores trusted"
XFAIL: dict[tuple[str, str], str] = {
    # (failure class on main, 2026-12-07, 9f2076f)
}

COMMANDS = ("ask", "region", "index")


def _params() -> list[Any]:
    out = []
    for case in hc.CASES:
        for command in COMMANDS:
            if getattr(case, command) is None:
                continue
            reason = XFAIL.get((case.name, command))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(case, command, id=f"{case.name}-{command}", marks=marks))
    return out


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("corpus-runs")
    r = hc.Runner(work, TIME_LIMIT_S, MEMORY_LIMIT_MB,
                  env={"VIPER_RS_CACHE_DIR": str(work / "cache"), "PYTHONIOENCODING": "utf-8",
                       "GDAL_HTTP_TIMEOUT": "5", **BUDGETS})
    yield r
    r.close()
    if hc.LISTENER is not None:
        hc.LISTENER.close()
    for s in hc.SOCKETS:
        s.close()


@pytest.fixture(scope="module")
def references(runner: hc.Runner, tmp_path_factory: pytest.TempPathFactory):
    """The reference answers (:data:`hostile_corpus.REFERENCES`), computed when first asked."""
    cache: dict[str, Any] = {}
    folder = tmp_path_factory.mktemp("corpus-references")

    def get(name: str) -> Any:
        if name not in cache:
            how, make = hc.REFERENCES[name]
            if how == "memory":
                o = runner.truth(0, 256)
                assert o.status == "ok" and o.rc == 0, o
                cache[name] = {"value": json.loads(o.out.strip().splitlines()[-1])["value"]}
            else:
                d = folder / name
                d.mkdir()
                inputs = make(d)
                values, scanned = [], []
                for src in inputs.sources:
                    argv = (hc.argv_for("ask", inputs, d) if how == "ask" else
                            hc.argv_for("region", hc.Inputs(sources=[src]), d))
                    o = runner.run(argv, timeout_s=120)
                    assert o.status == "ok" and o.rc == 0, o
                    got = _json_answer(o.out)
                    values.append(got["value"])
                    scanned.append(got.get("coverage", {}).get("scanned_m2", 0.0))
                cache[name] = {"value": sum(values) if how == "region-sum" else values[0],
                               "scanned_m2": sum(scanned)}
        return cache[name]

    return get


def _json_answer(out: str) -> dict[str, Any]:
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])


def _fail(klass: str, outcome: hc.Outcome, what: str = "") -> None:
    pytest.fail(f"{klass}: {what} [exit {outcome.rc}, {outcome.status}, {outcome.seconds:.1f} s, "
                f"{outcome.peak_mb:.0f} MB]\nstdout: {outcome.out[-800:]!r}\n"
                f"stderr: {outcome.err[-1500:]!r}", pytrace=False)


def _refused(outcome: hc.Outcome, named: Path | None, names: bool = True) -> bool:
    """Whether ``outcome`` is a clear refusal naming ``named``; fails when it is one but
    unclear (several error lines, not naming the file)."""
    if outcome.rc != hc.REFUSED:
        return False
    errors = [ln for ln in outcome.err.splitlines() if ln.startswith("viper-rs: error:")]
    if len(errors) != 1:
        _fail("unclear refusal", outcome, f"{len(errors)} 'viper-rs: error:' lines")
    if named is not None and names:
        shown = safe_text(named.name)[:60]
        if shown not in errors[0]:
            _fail("unclear refusal", outcome, f"the error line does not name {shown!r}")
    return True


def _check(case: hc.Case, command: str, expect: hc.Expect, inputs: hc.Inputs,
           outcome: hc.Outcome, references: Any) -> None:
    if outcome.status == "timeout":
        _fail("hang", outcome, f"still running after {TIME_LIMIT_S:g} s (killed)")
    if outcome.status == "memory":
        _fail("memory", outcome, f"resident memory past {MEMORY_LIMIT_MB:g} MB (killed)")
    if outcome.status != "ok":
        _fail("crash", outcome, "the worker died")
    if "Traceback" in outcome.err or "Traceback" in outcome.out:
        _fail("traceback", outcome)
    for stream in (outcome.out, outcome.err):
        if RAW.search(stream):
            _fail("raw control characters", outcome, repr(RAW.search(stream).group()))
    if command == "index":
        _check_index(expect, inputs, outcome)
        return
    refused = _refused(outcome, inputs.named, expect.names)
    if expect.kind == "refuse":
        if not refused:
            _fail("wrong answer" if outcome.rc == 0 else "not refused", outcome,
                  "a malformed input must be refused")
        return
    if refused:
        if expect.kind == "either":
            return
        _fail("refused a valid input", outcome)
    if outcome.rc != 0:
        _fail("failed", outcome, f"exit {outcome.rc}")
    got = _json_answer(outcome.out)
    if got.get("error"):
        _fail("failed", outcome, f"answer error {got['error']}")
    if expect.truth is not None:
        want = references(expect.truth)
        if got.get("value") != want["value"]:
            _fail("wrong answer", outcome, f"answered {got.get('value')!r}, the clean input "
                  f"{want['value']!r}")
        if expect.scanned_at_most:
            scanned = got["coverage"]["scanned_m2"]
            if scanned > 1.01 * want["scanned_m2"]:
                _fail("wrong answer", outcome, f"{scanned:.0f} m2 scanned: more than the "
                      f"{want['scanned_m2']:.0f} m2 of valid ground (nodata counted as ground)")


def _check_index(expect: hc.Expect, inputs: hc.Inputs, outcome: hc.Outcome) -> None:
    if expect.kind == "either" and _refused(outcome, inputs.named, expect.names):
        return
    if outcome.rc != 0:
        _fail("index build stopped" if outcome.rc == hc.REFUSED else "failed", outcome,
              "a bad file must be skipped and listed, the valid one beside it indexed")
    report = json.loads(outcome.out)
    named = inputs.named.name if inputs.named is not None else None
    skipped = {Path(uri).name for uri, _ in report.get("skipped_sources", [])}
    # A file whose header reads but whose pixels do not is listed by its failed chips.
    failed = {named for _, why in report.get("failed", []) if named and named in why}
    if report.get("indexed", 0) + report.get("existing", 0) < 1:
        _fail("index build stopped", outcome, "the valid companion tile was not indexed")
    if expect.kind == "skip" and named not in skipped | failed:
        _fail("not skipped", outcome, f"{named!r} is not listed as skipped (or failed)")
    if expect.kind == "index":
        no_crs = inputs.sources[0].suffix.lower() in (".png", ".jpg", ".jpeg")
        if no_crs != (named in skipped) or named in failed:
            _fail("index", outcome, f"{named!r} {'not ' if no_crs else ''}listed as skipped")


@pytest.mark.parametrize(("case", "command"), _params())
def test_hostile_case(case: hc.Case, command: str, runner: hc.Runner, references: Any,
                      tmp_path: Path) -> None:
    inputs = case.make(tmp_path)
    for argv in inputs.setup:
        o = runner.run(argv, timeout_s=120)
        assert o.status == "ok" and o.rc == 0, o
    if inputs.after_setup is not None:
        inputs.after_setup()
    expect = getattr(case, command)
    outcome = runner.run(hc.argv_for(command, inputs, tmp_path))
    if inputs.listener is not None and inputs.listener.contacted():
        _fail("network", outcome, "the command connected to a network address of the input")
    _check(case, command, expect, inputs, outcome, references)


def test_runner_kills_a_hang_or_a_memory_hog_and_goes_on(tmp_path: Path) -> None:
    """The runner's own bounds: a command past the time or memory limit is killed and
    reported as such, and the next command runs in a new worker."""
    r = hc.Runner(tmp_path, timeout_s=3.0, memory_mb=600.0)
    try:
        hung = r.probe(sleep_s=600)
        assert hung.status == "timeout" and hung.seconds < 10
        hog = r.probe(allocate_mb=1500, sleep_s=30)
        assert hog.status == "memory" and hog.peak_mb > 600
        fine = r.probe(allocate_mb=50)
        assert fine.status == "ok" and fine.rc == 0 and fine.peak_mb < 600
        after = r.run(["tools"])
        assert after.status == "ok" and after.rc == 0 and "find" in after.out
    finally:
        r.close()
