"""The agent: question -> plan -> validate -> sandboxed run -> normalised Answer."""

from __future__ import annotations

import logging
import time
from typing import Any

import tools  # noqa: F401  (registers the tools)
from tools.context import ToolContext
from tools.registry import REGISTRY
from viper_rs.answer import Answer, normalise
from viper_rs.config import Settings
from viper_rs.errors import SandboxError, ViperError
from viper_rs.executor import ToolExecutor
from viper_rs.geo import GeoImage
from viper_rs.planning import build_planner
from viper_rs.planning.base import Plan, Planner
from viper_rs.sandbox import Limits, Sandbox
from viper_rs.vision.factory import build_detector

log = logging.getLogger(__name__)


class Agent:
    """Answers questions about images. Holds the detector, planner and sandbox pool.

    ``detector`` and ``planner`` may be names (see settings) or ready objects.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        detector: str | Any | None = None,
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
        s = self.settings
        return Limits(
            wall_s=s.sandbox_wall_s,
            cpu_s=s.sandbox_cpu_s,
            memory_mb=s.sandbox_memory_mb,
            max_output_chars=s.sandbox_max_output_chars,
            max_tool_calls=s.sandbox_max_tool_calls,
        )

    # ------------------------------------------------------------------ public API
    def ask(self, image: GeoImage, question: str, settings: Settings | None = None) -> Answer:
        """Plan a program for ``question`` and run it on ``image``.

        ``settings`` overrides the agent's settings for the tools of this one question
        (e.g. size-word thresholds); detector and planner stay as built.
        """
        t0 = time.perf_counter()
        try:
            plan = self.planner.plan(question)
        except ViperError as exc:
            return self._failed(image, question, None, exc, {"plan_ms": _ms(t0), "total_ms": _ms(t0)})
        plan_ms = _ms(t0)
        answer = self.run_program(image, plan.program, question=question, plan=plan, settings=settings)
        answer.timings = {"plan_ms": plan_ms, **answer.timings}
        answer.timings["total_ms"] = _ms(t0)
        return answer

    def run_program(
        self,
        image: GeoImage,
        program: str,
        question: str | None = None,
        plan: Plan | None = None,
        kind: str | None = None,
        settings: Settings | None = None,
    ) -> Answer:
        """Validate and run a program in the sandbox; wrap its result as an Answer.

        The sandbox validates before running: a rejected program comes back as a
        ``validation`` error without reaching a worker.
        """
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        ctx = ToolContext(image=image, detector=self.detector, settings=settings or self.settings)
        executor = ToolExecutor(ctx)
        result = self.sandbox.run(program, executor, REGISTRY.names(), image_info=image_info(image))
        timings["run_ms"] = _ms(t0)
        timings["tools_ms"] = round(sum(e.get("ms", 0.0) for e in executor.trace), 3)
        timings["total_ms"] = _ms(t0)
        hint = kind or (plan.kind if plan else None)
        base = dict(
            question=question,
            program=program,
            trace=executor.trace,
            regions=[ctx.regions[i] for i in sorted(ctx.regions)],
            timings=timings,
            detector=getattr(self.detector, "name", type(self.detector).__name__),
            planner=plan.planner if plan else None,
            notes=self._detector_notes() + list(plan.notes if plan else []) + ctx.notes,
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
        return Answer(answer=text, value=value, kind=kind_out, **base)

    def close(self) -> None:
        """Stop the sandbox workers (if this agent created them)."""
        if self._own_sandbox:
            self.sandbox.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers
    def _detector_notes(self) -> list[str]:
        note = getattr(self.detector, "choice_note", None)
        return [note] if note else []

    def _failed(
        self,
        image: GeoImage,
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
            detector=getattr(self.detector, "name", None),
            planner=plan.planner if plan else getattr(self.planner, "name", None),
            notes=self._detector_notes() + (list(plan.notes) if plan else []),
            image=image.describe(),
            area_unit=image.area_unit,
        )


def image_info(image: GeoImage) -> dict[str, Any]:
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


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)
