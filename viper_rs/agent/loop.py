"""The agent: question -> plan -> validate -> sandboxed run -> normalised Answer."""

from __future__ import annotations

import ast
import logging
import time
from typing import Any

from viper_rs import tools  # noqa: F401  (registers the tools)
from viper_rs.agent.executor import ToolExecutor
from viper_rs.agent.places import add_places
from viper_rs.core.answer import Answer
from viper_rs.core.config import Settings
from viper_rs.core.detector import Detector
from viper_rs.core.errors import SandboxError, SandboxTimeout, ValidationError, ViperError
from viper_rs.core.image import Image
from viper_rs.core.timing import ms_since
from viper_rs.core.vocabulary import query_key
from viper_rs.core.wording import normalise
from viper_rs.planning import build_planner
from viper_rs.planning.base import Plan, Planner, RepairingPlanner
from viper_rs.sandbox import Limits, Sandbox
from viper_rs.sandbox.validate import validate_program
from viper_rs.tools.context import ToolContext, parse_phrase
from viper_rs.tools.registry import REGISTRY
from viper_rs.vision.factory import build_detector

log = logging.getLogger(__name__)

#: Error types of a program's own fault, worth sending back to a repairing planner.
REPAIRABLE_ERRORS: frozenset[str] = frozenset({"validation", "sandbox", "timeout", "tool"})


class Agent:
    """Answers questions about images. Holds the detector, planner and sandbox pool.

    ``detector`` and ``planner`` may be names (see settings) or ready objects.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        detector: str | Detector | None = None,
        planner: str | Planner | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        det = detector if detector is not None else self.settings.detector
        self.detector = build_detector(det, self.settings) if isinstance(det, str) else det
        pl = planner if planner is not None else self.settings.planner
        self.planner = build_planner(pl, self.settings) if isinstance(pl, str) else pl
        self._own_sandbox = sandbox is None
        self.sandbox = sandbox or Sandbox(self.limits(), workers=self.settings.sandbox_workers)

    def limits(self) -> Limits:
        """Sandbox limits from the settings."""
        return Limits.from_settings(self.settings)

    # ------------------------------------------------------------------ public API
    def ask(
        self,
        image: Image,
        question: str,
        settings: Settings | None = None,
        detector: Detector | None = None,
        planner: Planner | None = None,
    ) -> Answer:
        """Plan a program for ``question`` and run it on ``image``.

        When the program fails (validation, sandbox, timeout or tool error) and the planner
        can repair it (LLM plans), the failure is sent back for a new program, up to
        ``llm_repair_attempts`` times; ``Answer.attempts`` records every try and the answer
        is the last one's. A program that ran without error is given to the planner's
        ``accept`` (the LLM planner caches it). ``settings`` overrides the agent's settings
        for the tools of this one question (e.g. size-word thresholds); ``detector`` and
        ``planner`` answer and plan this one question instead of the agent's own (a region
        question's chip-by-chip detector, a plan made beforehand); the agent is not changed.
        """
        detector = detector if detector is not None else self.detector
        planner = planner if planner is not None else self.planner
        t0 = time.perf_counter()
        attempts: list[dict[str, Any]] = []
        try:
            plan = planner.plan(question)
        except ViperError as exc:
            ms = ms_since(t0)
            answer = self._failed(image, detector, planner, question, None, exc,
                                  {"plan_ms": ms, "total_ms": ms})
            answer.attempts = [_attempt(1, answer.planner, None, exc.to_dict(), ms)]
            return answer
        plan_ms = ms_since(t0)
        plan_total = plan_ms
        failures: list[tuple[Plan, dict[str, str]]] = []
        while True:
            answer = self._try(image, detector, planner, question, plan, settings)
            attempts.append(_attempt(
                len(attempts) + 1, plan.planner, plan.program, answer.error, plan_ms,
                answer.timings.get("run_ms", 0.0), plan.cached, plan.meta,
            ))
            if answer.error is None:
                if isinstance(planner, RepairingPlanner):
                    planner.accept(question, plan)
                break
            if not self._repairable(planner, plan, answer.error, len(failures)):
                break
            failures.append((plan, answer.error))
            assert isinstance(planner, RepairingPlanner)  # _repairable checked it
            t1 = time.perf_counter()
            try:
                plan = planner.repair(question, failures)
            except ViperError as exc:
                ms = ms_since(t1)
                plan_total += ms
                attempts.append(_attempt(len(attempts) + 1, plan.planner, None, exc.to_dict(), ms))
                answer.notes.append(f"repair failed: {exc}")
                break
            plan_ms = ms_since(t1)
            plan_total += plan_ms
        if len(attempts) > 1:
            failed = [a["error"]["type"] for a in attempts if a["error"]]
            outcome = "answered" if answer.error is None else "still failing"
            answer.notes.append(
                f"{outcome} after {len(attempts)} attempts (failed: {', '.join(failed)}); "
                "see attempts"
            )
        answer.attempts = attempts
        answer.timings = {"plan_ms": round(plan_total, 3), **answer.timings}
        answer.timings["total_ms"] = ms_since(t0)
        return answer

    def _try(
        self, image: Image, detector: Detector, planner: Planner, question: str, plan: Plan,
        settings: Settings | None,
    ) -> Answer:
        """Run one plan; a plan that carries an error (no program in the reply) fails as is."""
        if plan.error is not None:
            exc = ValidationError(plan.error.get("message", "no program"))
            return self._failed(image, detector, planner, question, plan.program, exc,
                                {"run_ms": 0.0}, plan)
        return self.run_program(image, plan.program, question=question, plan=plan,
                                settings=settings, detector=detector)

    def _repairable(self, planner: Planner, plan: Plan, error: dict[str, str], done: int) -> bool:
        """Whether a failure should be sent back: a program fault, a repairing planner, and
        repairs left."""
        if error.get("type") not in REPAIRABLE_ERRORS:
            return False
        if not isinstance(planner, RepairingPlanner) or not planner.can_repair(plan):
            return False
        return done < self.settings.llm_repair_attempts

    def run_program(
        self,
        image: Image,
        program: str,
        question: str | None = None,
        plan: Plan | None = None,
        kind: str | None = None,
        settings: Settings | None = None,
        detector: Detector | None = None,
    ) -> Answer:
        """Validate and run a program in the sandbox; wrap its result as an Answer.

        The sandbox validates before running: a rejected program comes back as a
        ``validation`` error without reaching a worker. ``detector`` answers the program's
        tool calls instead of the agent's own (the agent is not changed).
        """
        detector = detector if detector is not None else self.detector
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        ctx = ToolContext(image=image, detector=detector, settings=settings or self.settings)
        executor = ToolExecutor(ctx)
        prepared = self._prepare(image, detector, program)
        if prepared is not None:
            timings["prepare_ms"] = prepared
        t1 = time.perf_counter()
        result = self.sandbox.run(program, executor, REGISTRY.names(), image_info=image_info(image))
        timings["program_ms"] = ms_since(t1)
        timings["run_ms"] = ms_since(t0)
        timings["tools_ms"] = round(sum(e.get("ms", 0.0) for e in executor.trace), 3)
        timings["total_ms"] = ms_since(t0)
        hint = kind or (plan.kind if plan else None)
        timed_out = isinstance(result.error, SandboxTimeout)
        base = dict(
            question=question,
            program=program,
            trace=executor.trace,
            calls=executor.calls,
            # A timed-out program's partial regions are not evidence of anything.
            regions=[] if timed_out else [ctx.regions[i] for i in sorted(ctx.regions)],
            timings=timings,
            detector=detector.name,
            planner=plan.planner if plan else None,
            notes=(_image_notes(image) + _detector_notes(detector) + list(plan.notes if plan else [])
                   + ctx.notes),
            image=image.describe(),
            area_unit=image.area_unit,
            stdout=result.stdout,
        )
        if result.error is not None:
            return Answer(
                answer=f"Could not answer: {result.error}", value=None,
                kind=hint or "other", error=result.error.to_dict(), **base,
            )
        if result.value is None:
            err = SandboxError("the program returned no value (None)")
            return Answer(
                answer=f"Could not answer: {err}", value=None, kind=hint or "other",
                error=err.to_dict(), **base,
            )
        text, value, kind_out = normalise(result.value, hint, image.area_unit)
        answer = Answer(answer=text, value=value, kind=kind_out, **base)
        add_places(answer, result.value, ctx.regions, image)  # "where" programs
        return answer

    def close(self) -> None:
        """Stop the sandbox workers (if this agent created them)."""
        if self._own_sandbox:
            self.sandbox.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers
    def _prepare(self, image: Image, detector: Detector, program: str) -> float | None:
        """The detector's per-image work (features, class maps; a region's chip scan for the
        concepts the program names literally), done before the program starts so that its
        wall-clock limit covers only what the program causes; cached per image by the
        detector. Skipped for programs the sandbox will reject.
        Returns the milliseconds spent, or None when the program is rejected."""
        try:
            validate_program(program, REGISTRY.names(),
                             max_source_chars=self.sandbox.limits.max_source_chars)
        except ValidationError:
            return None
        t0 = time.perf_counter()
        try:
            detector.prepare(image, program_queries(program))
        except ViperError as exc:  # the program's first tool call meets it again and reports it
            log.debug("detector preparation failed: %s", exc)
        return ms_since(t0)

    def _failed(
        self,
        image: Image,
        detector: Detector,
        planner: Planner,
        question: str | None,
        program: str | None,
        exc: ViperError,
        timings: dict[str, float],
        plan: Plan | None = None,
    ) -> Answer:
        return Answer(
            question=question,
            answer=f"Could not answer: {exc}",
            value=None,
            kind=plan.kind if plan else "other",
            program=program,
            error=exc.to_dict(),
            timings=timings,
            detector=detector.name,
            planner=plan.planner if plan else planner.name,
            notes=(_image_notes(image) + _detector_notes(detector)
                   + (list(plan.notes) if plan else [])),
            image=image.describe(),
            area_unit=image.area_unit,
        )


def _detector_notes(detector: Detector) -> list[str]:
    """The detector's note on why it was chosen, when it has one."""
    note = detector.choice_note
    return [note] if note else []


def _image_notes(image: Image) -> list[str]:
    """What the image itself says an answer must carry (no georeference: areas in pixels)."""
    return [str(n) for n in image.notes]


def program_queries(program: str) -> list[str]:
    """The base concepts a program names literally (string constants given to the concept
    parameters the registry declares: find, exists, count, area, compare), as the keys
    ``ToolContext.detect`` will look up, each once in order of first use;
    concepts computed at run time are not seen."""
    try:
        tree = ast.parse(program)
    except SyntaxError:
        return []
    out: list[str] = []
    calls = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Call)),
                   key=lambda n: (n.lineno, n.col_offset))  # in order of first use
    for node in calls:
        if not (isinstance(node.func, ast.Name) and node.func.id in REGISTRY):
            continue
        tool = REGISTRY[node.func.id]
        positions = tool.concept_positions()
        args = [a for i, a in enumerate(node.args) if i in positions]
        args += [kw.value for kw in node.keywords if kw.arg in tool.concepts]
        for arg in args:
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                continue
            try:
                base, _, _ = parse_phrase(arg.value)
            except ViperError:
                continue
            key = query_key(base)
            if key not in out:
                out.append(key)
    return out


def image_info(image: Image) -> dict[str, Any]:
    """Plain facts about the image that programs may read as ``image.<key>``."""
    d = image.describe()
    return {
        "width": d["width"],
        "height": d["height"],
        "bands": d["bands"],
        "crs": d["crs"],
        "gsd_m": d["gsd_m"],
        "area_unit": d["area_unit"],
        "name": d["name"],
    }


def _attempt(
    n: int,
    planner: str | None,
    program: str | None,
    error: dict[str, str] | None,
    plan_ms: float,
    run_ms: float = 0.0,
    cached: bool = False,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One entry of ``Answer.attempts``."""
    record: dict[str, Any] = {
        "attempt": n, "planner": planner, "program": program, "error": error,
        "cached": cached, "plan_ms": plan_ms, "run_ms": run_ms,
    }
    for k, v in (meta or {}).items():
        record.setdefault(k, v)
    return record
