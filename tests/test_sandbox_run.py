"""Normal programs in the sandbox: tool calls, data conventions, pool behaviour."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from viper_rs.core.errors import (
    ConfigError,
    SandboxError,
    SandboxTimeout,
    ToolError,
    ValidationError,
)
from viper_rs.sandbox import Limits, Sandbox, SandboxResult, run_inprocess

TOOLS = ["find", "count", "exists", "area", "left_of", "echo", "slow", "stats"]
REGIONS = [
    {"__region__": 1, "id": 1, "label": "building", "area_m2": 120.5, "score": 0.91,
     "bbox": [0, 0, 10, 12], "centroid": [5.0, 6.0], "query": "building"},
    {"__region__": 2, "id": 2, "label": "building", "area_m2": 30.25, "score": 0.6,
     "bbox": [20, 4, 25, 9], "centroid": [22.5, 6.5], "query": "building"},
    {"__region__": 7, "id": 7, "label": "road", "area_m2": 400.0, "score": 0.8,
     "bbox": [30, 0, 34, 48], "centroid": [32.0, 24.0], "query": "road"},
]  # fmt: skip
IMAGE = {"width": 64, "height": 48, "gsd_m": 0.6, "area_unit": "m2", "crs": None}


class RecordingHandler:
    """A trivial tool backend that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list, dict]] = []

    def __call__(self, name: str, args: list, kwargs: dict):
        self.calls.append((name, args, kwargs))
        if name == "find":
            return [r for r in REGIONS if r["label"] == args[0]]
        if name == "count":
            return len([r for r in REGIONS if r["label"] == args[0]])
        if name == "exists":
            return any(r["label"] == args[0] for r in REGIONS)
        if name == "area":
            return sum(r["area_m2"] for r in REGIONS if r["label"] == args[0])
        if name == "left_of":
            a, b = args
            edge = min(r["bbox"][0] for r in b) if b else 0
            return [r for r in a if r["bbox"][2] <= edge] if b else []
        if name == "echo":
            return {"args": args, "kwargs": kwargs}
        if name == "slow":
            time.sleep(float(args[0]))
            return "done"
        if name == "stats":
            return {"mean": np.float32(1.5), "n": np.int64(3), "hist": np.arange(3)}
        raise ToolError(f"no tool {name}")


def program(body: str) -> str:
    return "def execute_command(image):\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ")


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(Limits(wall_s=5, cpu_s=2, memory_mb=256), workers=2) as sb:
        yield sb


def run(sb: Sandbox, source: str, handler=None, image=IMAGE) -> SandboxResult:
    result = sb.run(source, handler or RecordingHandler(), TOOLS, image_info=image)
    assert result.error is None, result.error
    return result


def test_tool_calls_with_args_and_kwargs(sandbox: Sandbox) -> None:
    h = RecordingHandler()
    result = run(sandbox, program("""
        n = count("building")
        e = echo(1, 2.5, "s", None, True, [1, (2, 3)], {"k": "v"}, op="more", size={"m2": 50})
        return [n, e]
    """), h)  # fmt: skip
    assert result.value == [
        2,
        {"args": [1, 2.5, "s", None, True, [1, [2, 3]], {"k": "v"}],
         "kwargs": {"op": "more", "size": {"m2": 50}}},
    ]  # fmt: skip
    assert h.calls[0] == ("count", ["building"], {})
    assert h.calls[1][0] == "echo" and h.calls[1][2] == {"op": "more", "size": {"m2": 50}}
    assert result.tool_calls == 2
    assert result.wall_s > 0 and result.cpu_s >= 0


def test_region_views(sandbox: Sandbox) -> None:
    result = run(sandbox, program("""
        rs = find("building")
        r = rs[0]
        big = [x for x in rs if x.area_m2 > 100]
        by_area = sorted(rs, key=lambda x: x.area_m2)
        return {
            "id": r.id, "label": r.label, "area": r.area_m2, "score": r.score,
            "bbox": r.bbox, "x0": r.bbox[0], "centroid": r.centroid, "query": r.query,
            "n_big": len(big), "smallest": by_area[0].id,
            "same": r == find("building")[0], "different": r != rs[1],
            "unique": len(set(rs + find("building"))), "in": r in rs,
            "ordered": [x.id for x in sorted([rs[1], r])],
            "repr": str(r),
        }
    """))  # fmt: skip
    v = result.value
    assert v["id"] == 1 and v["label"] == "building" and v["area"] == 120.5
    assert v["bbox"] == [0, 0, 10, 12] and v["x0"] == 0 and v["centroid"] == [5.0, 6.0]
    assert v["n_big"] == 1 and v["smallest"] == 2
    assert v["same"] is True and v["different"] is True and v["in"] is True
    assert v["unique"] == 2 and v["ordered"] == [1, 2]
    assert v["repr"] == "Region(id=1, label='building', area_m2=120.5, score=0.91)"


def test_region_views_round_trip_as_arguments(sandbox: Sandbox) -> None:
    h = RecordingHandler()
    result = run(sandbox, program("""
        houses = find("building")
        roads = find("road")
        return left_of(houses, roads), echo(houses[0], pair=(houses[1], roads[0]))
    """), h)  # fmt: skip
    left, echoed = result.value
    assert [r["__region__"] for r in left] == [1, 2]
    assert echoed["args"] == [REGIONS[0]]
    assert echoed["kwargs"] == {"pair": [REGIONS[1], REGIONS[2]]}
    name, args, _ = h.calls[2]
    assert name == "left_of" and args == [REGIONS[:2], [REGIONS[2]]]


def test_return_values(sandbox: Sandbox) -> None:
    cases = {
        "return None": None,
        "return True": True,
        "return 3": 3,
        "return 2.5": 2.5,
        "return 'yes'": "yes",
        "return (1, [2, (3,)])": [1, [2, [3]]],
        "return {'a': {'b': (1, 2)}}": {"a": {"b": [1, 2]}},
        "return {3, 1, 2}": [1, 2, 3],
        "return find('road')[0]": REGIONS[2],
        "return find('building')": REGIONS[:2],
        "return {'top': find('road')}": {"top": [REGIONS[2]]},
        "return image.width * image.height": 64 * 48,
    }
    for body, expected in cases.items():
        assert run(sandbox, program(body)).value == expected, body


def test_non_str_dict_keys_are_rejected(sandbox: Sandbox) -> None:
    result = sandbox.run(program("return {1: 'a'}"), RecordingHandler(), TOOLS)
    assert isinstance(result.error, SandboxError) and "keys must be str" in str(result.error)


def test_print_capture(sandbox: Sandbox) -> None:
    result = run(sandbox, program("""
        rs = find("building")
        print("found", len(rs), "regions")
        print(rs[0])
        print("a", "b", sep="-", end="!")
        print()
        return len(rs)
    """))  # fmt: skip
    assert result.stdout == (
        "found 2 regions\nRegion(id=1, label='building', area_m2=120.5, score=0.91)\na-b!\n"
    )
    assert result.value == 2


def test_output_is_truncated_at_the_limit() -> None:
    limits = Limits(max_output_chars=50)
    result = run_inprocess(program("print('x' * 100)\nreturn 1"), RecordingHandler(), TOOLS,
                           limits=limits)  # fmt: skip
    assert isinstance(result.error, SandboxError)
    assert result.stdout == "x" * 50


def test_image_attributes(sandbox: Sandbox) -> None:
    result = run(sandbox, program("""
        return [image.width, image.height, image.gsd_m, image.area_unit, image.crs, str(image)]
    """))  # fmt: skip
    assert result.value[:5] == [64, 48, 0.6, "m2", None]
    assert result.value[5].startswith("Image(width=64")


def test_missing_attribute_is_a_sandbox_error(sandbox: Sandbox) -> None:
    result = sandbox.run(program("return image.bands"), RecordingHandler(), TOOLS, IMAGE)
    assert isinstance(result.error, SandboxError)
    assert "AttributeError" in str(result.error) and "line 2" in str(result.error)
    assert "width" in str(result.error)  # lists what is available


def test_ordinary_exceptions_report_line(sandbox: Sandbox) -> None:
    result = sandbox.run(program("x = 1\ny = 0\nreturn x / y"), RecordingHandler(), TOOLS)
    assert type(result.error) is SandboxError
    assert str(result.error) == "ZeroDivisionError: division by zero (line 4)"


def test_validation_errors_are_returned_not_raised(sandbox: Sandbox) -> None:
    result = sandbox.run("import os", RecordingHandler(), TOOLS)
    assert type(result.error) is ValidationError
    assert result.value is None and result.tool_calls == 0


def test_numpy_values_from_handler_become_plain(sandbox: Sandbox) -> None:
    result = run(sandbox, program("s = stats()\nreturn [s['mean'] + 1, s['n'], s['hist']]"))
    assert result.value == [2.5, 3, [0, 1, 2]]


def test_handler_time_is_charged_to_the_wall_clock() -> None:
    with Sandbox(Limits(wall_s=0.5, cpu_s=1), workers=1) as sb:
        result = sb.run(program("return [slow(0.3), slow(0.3), slow(0.3)]"),
                        RecordingHandler(), TOOLS)  # fmt: skip
        assert isinstance(result.error, SandboxTimeout), result.error
        assert "tool calls included" in str(result.error)
        assert result.tool_calls == 2  # the third call never started
        assert 0.5 <= result.wall_s < 1.5
        # the worker was replaced; the next program runs
        again = sb.run(program("return slow(0.1)"), RecordingHandler(), TOOLS)
        assert again.error is None and again.value == "done"


def test_inprocess_matches_sandbox(sandbox: Sandbox) -> None:
    sources = [
        program("return [r.id for r in find('building')] + [count('road')]"),
        program("print('hi', image.width)\nreturn {'r': find('road')[0], 'a': area('building')}"),
        program("return echo(find('road')[0], k=(1, 2))"),
        program("return 1 / 0"),
        program("return count('nothing') + len(undefined_name)"),
    ]
    for source in sources:
        a = sandbox.run(source, RecordingHandler(), TOOLS, IMAGE)
        b = run_inprocess(source, RecordingHandler(), TOOLS, IMAGE)
        assert a.value == b.value, source
        assert a.stdout == b.stdout, source
        assert type(a.error) is type(b.error), source
        assert str(a.error) == str(b.error), source
        assert a.tool_calls == b.tool_calls, source


def test_concurrent_runs_from_four_threads(sandbox: Sandbox) -> None:
    errors: list[str] = []

    def worker(tid: int) -> None:
        for i in range(15):
            h = RecordingHandler()
            src = program(f"return [echo({tid}, {i}), count('building')]")
            result = sandbox.run(src, h, TOOLS)
            expected = [{"args": [tid, i], "kwargs": {}}, 2]
            if result.error is not None or result.value != expected:
                errors.append(f"{tid}/{i}: {result.error} {result.value}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_pool_reuses_workers_and_replaces_crashed_ones() -> None:
    with Sandbox(Limits(wall_s=2, cpu_s=0.5), workers=1) as sb:
        run(sb, program("return 1"))
        first = sb.worker_pids()
        assert len(first) == 1
        for _ in range(5):
            run(sb, program("return count('building')"))
        # ordinary program failures keep the worker
        assert sb.run(program("return 1 / 0"), RecordingHandler(), TOOLS).error is not None
        assert sb.worker_pids() == first
        # a limit kills the worker; a replacement appears in the background
        result = sb.run(program("while True:\n    pass"), RecordingHandler(), TOOLS)
        assert type(result.error) is SandboxTimeout
        assert not Path(f"/proc/{first[0]}").exists()
        assert _wait_for(lambda: len(sb.worker_pids()) == 1 and sb.worker_pids() != first)
        assert run(sb, program("return 2")).value == 2


def test_worker_that_dies_while_idle_is_replaced() -> None:
    with Sandbox(Limits(wall_s=2, cpu_s=1), workers=1) as sb:
        run(sb, program("return 1"))
        (pid,) = sb.worker_pids()
        os.killpg(pid, 9)
        time.sleep(0.05)
        assert run(sb, program("return 5")).value == 5
        assert sb.worker_pids() != [pid]


def _is_child_alive(pid: int) -> bool:
    """True while ``pid`` exists (even as a zombie) -- it must be gone and reaped."""
    return Path(f"/proc/{pid}").exists()


def test_close_leaves_no_child_processes() -> None:
    sb = Sandbox(Limits(wall_s=2, cpu_s=1), workers=3)
    assert sb.run(program("return 1"), RecordingHandler(), TOOLS).value == 1
    pids = sb.worker_pids()
    assert len(pids) == 3
    sb.close()
    sb.close()  # idempotent
    assert sb.closed and sb.worker_pids() == []
    for pid in pids:
        assert not _is_child_alive(pid)
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    with pytest.raises(SandboxError, match="closed"):
        sb.run(program("return 1"), RecordingHandler(), TOOLS)


def test_garbage_collected_sandbox_kills_its_workers() -> None:
    sb = Sandbox(workers=2)
    pids = sb.worker_pids()
    del sb
    import gc

    gc.collect()
    assert all(not _is_child_alive(pid) for pid in pids)


def test_workers_are_killed_at_interpreter_exit(tmp_path: Path) -> None:
    script = tmp_path / "leave_open.py"
    script.write_text(textwrap.dedent("""
        from viper_rs.sandbox import Sandbox
        sb = Sandbox(workers=2)
        r = sb.run("def execute_command(image):\\n    return 1", lambda *a: None, [])
        assert r.value == 1, r
        print(" ".join(map(str, sb.worker_pids())))
    """))  # fmt: skip
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2
    assert _wait_for(lambda: all(not _is_child_alive(p) for p in pids), timeout=5)


def test_limits_are_validated() -> None:
    with pytest.raises(ConfigError):
        Limits(wall_s=0)
    with pytest.raises(ConfigError):
        Limits(max_tool_calls=-1)
    with pytest.raises(ConfigError):
        Sandbox(workers=0)


def test_tool_names_are_enforced_by_the_parent(sandbox: Sandbox) -> None:
    # "echo" is not offered this time: the program cannot even name it
    result = sandbox.run(program("return echo(1)"), RecordingHandler(), ["count"])
    assert type(result.error) is ValidationError


def test_plain_data_image_info_is_required(sandbox: Sandbox) -> None:
    result = sandbox.run(program("return 1"), RecordingHandler(), TOOLS, {"bad": object()})
    assert isinstance(result.error, SandboxError)
