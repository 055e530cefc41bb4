"""Sandbox overhead per trivial program: in-process vs warm pool vs a cold worker.

``python -m eval.bench_sandbox [--n 200] [--cold-n 50] [--workers 2] [--json]``

The program makes three tool calls against a handler that answers instantly, so the
numbers are the cost of validation, isolation and the tool-call round trips.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from viper_rs.sandbox import Limits, Sandbox, SandboxResult, run_inprocess

PROGRAM = """
def execute_command(image):
    n = count("building")
    present = exists("road")
    total = area("water")
    return {"n": n, "road": present, "water_m2": total, "w": image.width}
"""
TOOLS = ["count", "exists", "area"]
IMAGE = {"width": 512, "height": 512, "gsd_m": 0.6, "area_unit": "m2"}


def handler(name: str, args: list, kwargs: dict) -> Any:
    """Instant answers for the three tools."""
    return {"count": 3, "exists": True, "area": 125.5}[name]


def _check(result: SandboxResult) -> None:
    if result.error is not None or result.value["n"] != 3:
        raise RuntimeError(f"benchmark program failed: {result.error}")


def _timed(run_once: Callable[[], SandboxResult], n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        result = run_once()
        times.append((time.perf_counter() - started) * 1000.0)
        _check(result)
    return times


def _summary(times_ms: list[float]) -> dict[str, float]:
    ordered = sorted(times_ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(p95, 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


def bench(n: int = 200, cold_n: int = 50, workers: int = 2) -> dict[str, Any]:
    """Run the three measurements; returns the numbers as a dict."""
    limits = Limits()

    def inprocess() -> SandboxResult:
        return run_inprocess(PROGRAM, handler, TOOLS, IMAGE, limits)

    for _ in range(10):
        inprocess()
    results: dict[str, Any] = {"inprocess": _summary(_timed(inprocess, n))}

    with Sandbox(limits, workers=workers) as sandbox:
        for _ in range(10):  # every worker started and warm
            _check(sandbox.run(PROGRAM, handler, TOOLS, IMAGE))
        results["pool"] = _summary(_timed(lambda: sandbox.run(PROGRAM, handler, TOOLS, IMAGE), n))

    def cold() -> SandboxResult:
        with Sandbox(limits, workers=1) as sandbox:
            return sandbox.run(PROGRAM, handler, TOOLS, IMAGE)

    results["cold_worker"] = _summary(_timed(cold, cold_n))
    results["pool_over_inprocess"] = round(
        results["pool"]["median_ms"] / max(results["inprocess"]["median_ms"], 1e-9), 1
    )
    results["cold_over_pool"] = round(
        results["cold_worker"]["median_ms"] / max(results["pool"]["median_ms"], 1e-9), 1
    )
    results["tool_calls_per_program"] = len(TOOLS)
    results["workers"] = workers
    results["python"] = sys.version.split()[0]
    return results


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="programs per measurement")
    parser.add_argument("--cold-n", type=int, default=50, help="programs for the cold worker")
    parser.add_argument("--workers", type=int, default=2, help="pool size")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    results = bench(args.n, args.cold_n, args.workers)
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"sandbox overhead per trivial program ({len(TOOLS)} tool calls), milliseconds")
    print(f"{'':14}{'median':>10}{'p95':>10}{'n':>6}")
    for key, label in (("inprocess", "in-process"), ("pool", "warm pool"),
                       ("cold_worker", "cold worker")):  # fmt: skip
        row = results[key]
        print(f"{label:14}{row['median_ms']:>10.3f}{row['p95_ms']:>10.3f}{row['n']:>6}")
    print(f"pool / in-process: {results['pool_over_inprocess']}x")
    print(f"cold / pool:       {results['cold_over_pool']}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
