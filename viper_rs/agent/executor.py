"""Runs tool calls coming from a sandboxed program: resolves region references,
validates arguments against the registry, times each call and records it twice: as a
trace entry (bounded, for people and the JSON) and as data (:class:`ToolCall`, for the
answer's wording)."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from viper_rs.core import budget
from viper_rs.core.admission import out_of_memory
from viper_rs.core.answer import CallValue, RegionSet, ToolCall
from viper_rs.core.errors import ToolError, ViperError
from viper_rs.core.regions import Region
from viper_rs.core.timing import ms_since
from viper_rs.tools.context import MAX_REGION_REFS_PER_CALL, ToolContext, use_context
from viper_rs.tools.registry import REGISTRY, Registry

log = logging.getLogger(__name__)
REGION_KEY = "__region__"
#: Deepest nesting of a tool argument (lists in lists...) the parent unpacks.
MAX_ARG_DEPTH = 16


class ToolExecutor:
    """Callable handler ``(name, args, kwargs) -> plain data`` for the sandbox."""

    def __init__(self, ctx: ToolContext, registry: Registry = REGISTRY) -> None:
        self.ctx = ctx
        self.registry = registry
        self.trace: list[dict[str, Any]] = []
        #: Every call as data (ids and labels of the region lists it took and gave).
        self.calls: list[ToolCall] = []
        self._refs = 0  # region references unpacked in the current call

    def __call__(self, name: str, args: list, kwargs: dict) -> Any:
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"tool": name, "args": summarize(args), "kwargs": summarize(kwargs)}
        n_stages = len(self.ctx.stages)
        real_args: list[Any] = []
        real_kwargs: dict[str, Any] = {}
        done: list[Any] = []  # the result, once the tool returned
        try:
            self._refs = 0
            real_args = [self.from_plain(a) for a in args]
            real_kwargs = {k: self.from_plain(v) for k, v in kwargs.items()}
            budget.check()
            with use_context(self.ctx):
                result = self.registry.call(name, real_args, real_kwargs)
            if isinstance(result, list):
                self.ctx.register([r for r in result if isinstance(r, Region)])
            entry["result"] = summarize(result)
            done.append(result)
            return self.to_plain(result)
        except ViperError as exc:
            entry["error"] = exc.to_dict()
            raise
        except MemoryError:
            err = out_of_memory(self.ctx.image, f"running {name}")
            entry["error"] = err.to_dict()
            raise err from None
        except Exception as exc:  # a bug in a tool must not take the agent down
            log.debug("tool %s failed", name, exc_info=True)
            text = str(exc)
            text = text if len(text) <= 200 else text[:200] + "..."
            err = ToolError(f"internal error in tool {name}: {type(exc).__name__}: {text}")
            entry["error"] = err.to_dict()
            raise err from None
        finally:
            entry["ms"] = ms_since(t0)
            if len(self.ctx.stages) > n_stages:
                entry["detections"] = self.ctx.stages[n_stages:]
            self.trace.append(entry)
            tool = self.registry[name] if name in self.registry else None
            self.calls.append(ToolCall(
                tool=name,
                kinds=tool.kinds if tool is not None else (),
                describes=tool.describes if tool is not None else None,
                args=tuple(call_value(a) for a in real_args),
                kwargs={str(k): call_value(v) for k, v in real_kwargs.items()},
                result=call_value(done[0]) if done else None,
                failed=not done or "error" in entry,
            ))

    def from_plain(self, value: Any, depth: int = 0) -> Any:
        """Region references back to Regions; containers recursively.

        Only ids issued to this program resolve, at most ``MAX_REGION_REFS_PER_CALL`` per
        call and ``MAX_ARG_DEPTH`` levels deep; anything else is a ToolError.
        """
        if depth > MAX_ARG_DEPTH:
            raise ToolError(f"tool arguments are nested more than {MAX_ARG_DEPTH} levels deep")
        if isinstance(value, dict):
            if REGION_KEY in value:
                self._refs += 1
                if self._refs > MAX_REGION_REFS_PER_CALL:
                    raise ToolError(
                        f"more than {MAX_REGION_REFS_PER_CALL} region references in one tool "
                        "call; filter the regions first"
                    )
                return self.ctx.resolve(value[REGION_KEY])
            return {k: self.from_plain(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            if len(value) > 256:
                budget.check()
            return [self.from_plain(v, depth + 1) for v in value]
        return value

    def to_plain(self, value: Any) -> Any:
        """Regions to ``{"__region__": id, ...summary}``; numpy scalars to Python."""
        if isinstance(value, Region):
            return {REGION_KEY: value.id, **value.summary()}
        if isinstance(value, (list, tuple)):
            return [self.to_plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): self.to_plain(v) for k, v in value.items()}
        if isinstance(value, np.generic):
            return value.item()
        return value


def call_value(value: Any) -> CallValue:
    """What a :class:`ToolCall` keeps of a tool's argument or result: a list of regions (an
    empty list too) as its :class:`RegionSet`, a scalar as itself (numpy ones as Python's),
    anything else as None."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, Region) for v in value):
        return RegionSet.of(value)
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return None


def summarize(value: Any, limit: int = 12) -> Any:
    """Short trace-friendly form of a value (regions as ids + labels + areas)."""
    if isinstance(value, Region):
        return {"region": value.id, "label": value.label, "area_m2": round(value.area_m2, 2)}
    if isinstance(value, dict) and REGION_KEY in value:
        return {"region": value[REGION_KEY]}
    if isinstance(value, (list, tuple)):
        if value and all(_is_region(v) for v in value):
            ids = [v.id if isinstance(v, Region) else v[REGION_KEY] for v in value[:limit]]
            out: dict[str, Any] = {"regions": len(value), "ids": ids}
            if len(value) > limit:
                out["truncated"] = True
            return out
        return [summarize(v, limit) for v in value[:limit]] + (["..."] if len(value) > limit else [])
    if isinstance(value, dict):
        return {str(k): summarize(v, limit) for k, v in list(value.items())[:limit]}
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "..."
    return value


def _is_region(v: Any) -> bool:
    return isinstance(v, Region) or (isinstance(v, dict) and REGION_KEY in v)
