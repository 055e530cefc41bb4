"""Running a program in this process, without isolation (benchmarks and debugging)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from viper_rs.core.errors import SandboxError, ValidationError
from viper_rs.sandbox import worker as _runtime
from viper_rs.sandbox.dispatch import Dispatcher, Handler, error_from_outcome, plain_default
from viper_rs.sandbox.limits import Limits, SandboxResult
from viper_rs.sandbox.validate import validate_program

__all__ = ["run_inprocess"]


def run_inprocess(
    source: str,
    handler: Handler,
    tool_names: Sequence[str],
    image_info: dict | None = None,
    limits: Limits | None = None,
) -> SandboxResult:
    """Validate and run a program in this process, without isolation.

    Same validation, namespace, builtins and data conventions as :class:`Sandbox`, and
    the same output/tool-call/result limits, but no wall-clock, CPU or memory limits:
    for benchmarks and debugging only, never for untrusted programs.
    """
    limits = limits or Limits()
    started = time.perf_counter()
    tool_names = list(tool_names)
    try:
        validate_program(source, tool_names, max_source_chars=limits.max_source_chars)
        image = json.loads(json.dumps(image_info or {}, default=plain_default))
    except ValidationError as exc:
        return SandboxResult(None, "", exc, time.perf_counter() - started, 0.0, 0)
    except (TypeError, ValueError) as exc:
        err = SandboxError(f"image_info is not plain data: {exc}")
        return SandboxResult(None, "", err, time.perf_counter() - started, 0.0, 0)
    dispatcher = Dispatcher(handler, tool_names, limits)

    def call_tool(name: str, args: list, kwargs: dict) -> Any:
        plain = json.loads(json.dumps({"a": args, "k": kwargs}))
        reply = json.loads(dispatcher.dispatch(name, plain["a"], plain["k"]))
        if reply["ok"]:
            return reply["value"]
        raise _runtime.Abort("aborted", reply["error"]["message"])

    runtime = _runtime.Runtime(
        call_tool,
        max_output_chars=limits.max_output_chars,
        max_tool_calls=limits.max_tool_calls,
        max_result_chars=limits.max_result_chars,
    )
    outcome = runtime.run(source, tool_names, image)
    value, error = None, None
    if dispatcher.error is not None:
        error = dispatcher.error
    elif outcome["ok"]:
        value = json.loads(outcome["value_json"])
    else:
        error = error_from_outcome(outcome, limits)
    return SandboxResult(
        value=value,
        stdout=outcome.get("stdout", ""),
        error=error,
        wall_s=time.perf_counter() - started,
        cpu_s=float(outcome.get("cpu_s", 0.0)),
        tool_calls=max(dispatcher.calls, int(outcome.get("tool_calls", 0))),
    )

