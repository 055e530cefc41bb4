"""Workers come back clean: whatever one program leaves behind (reference cycles holding
large objects, exceptions, aborted tool calls) is collected before the next program, or
the worker is replaced; an honest program never fails because of the one before it."""

from __future__ import annotations

import gc
import json
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest

from tests.test_sandbox_run import _wait_for
from viper_rs.core.errors import SandboxError, ToolError, ValidationError
from viper_rs.sandbox import Limits, Sandbox, run_inprocess
from viper_rs.sandbox import pool as sandbox_pool
from viper_rs.sandbox import worker as sandbox_worker
from viper_rs.sandbox.process import WorkerProcess

# 35 million list slots are 280 MB: the 512 MB address space holds one such list, not two.
BIG = "[0] * 35_000_000"
LIMITS = Limits(wall_s=20, cpu_s=10, memory_mb=512, max_output_chars=2_000, max_tool_calls=20)
TOOLS = ["count"]
SENTINEL = Path("/tmp/viper_sandbox_clean_sentinel")


def handler(name: str, args: list, kwargs: dict):
    if args and args[0] == "bad":
        raise ToolError("count() expects a known concept, got 'bad'")
    return 3


def program(body: str) -> str:
    return "def execute_command(image):\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ")


HONEST = program(f"x = {BIG}\nreturn len(x)")

# (id, poison body, expected value or error class, worker reused afterwards)
POISONS: list[tuple[str, str, object, bool]] = [
    ("list_cycle", f"a = {BIG}\nb = [a]\na.append(b)\nreturn 1", 1, True),
    ("self_cycle", f"a = {BIG}\na.append(a)\nreturn 1", 1, True),
    ("dict_cycle", f"d = {{'big': {BIG}}}\nd['me'] = d\nreturn 2", 2, True),
    ("lambda_closure_cycle", f"big = {BIG}\nf = lambda: (big, f)\nreturn 3", 3, True),
    (
        "function_closure_cycle",
        f"big = {BIG}\ndef again():\n    return again, big\nreturn 4",
        4,
        True,
    ),
    (
        "generator_cycle",
        f"box = [{BIG}]\ng = (len(b) for b in box)\nbox.append(g)\nreturn 5",
        5,
        True,
    ),
    ("cycle_then_exception", f"a = {BIG}\na.append(a)\nreturn 1 / 0", SandboxError, True),
    (
        "cycle_then_assert",
        f"a = {BIG}\na.append([a])\nassert len(a) < 10\nreturn 0",
        SandboxError,
        True,
    ),
    ("cycle_then_tool_error", f"a = {BIG}\na.append(a)\nreturn count('bad')", ToolError, True),
    ("cycle_then_bad_result", f"a = {BIG}\na.append(a)\nreturn lambda: a", SandboxError, True),
    (
        "cycle_then_tool_limit",
        f"a = {BIG}\na.append(a)\nwhile True:\n    count('building')",
        SandboxError,
        False,
    ),
    (
        "cycle_then_output_limit",
        f"a = {BIG}\na.append(a)\nwhile True:\n    print('spam' * 100)",
        SandboxError,
        False,
    ),
]


@pytest.mark.parametrize(
    ("poison", "expected", "reused"),
    [(p, e, r) for _, p, e, r in POISONS],
    ids=[name for name, *_ in POISONS],
)
def test_honest_program_after_poison_on_the_same_worker(poison, expected, reused) -> None:
    with Sandbox(LIMITS, workers=1) as sb:
        first = sb.run(program("return 0"), handler, TOOLS)
        assert first.error is None, first.error
        (pid,) = sb.worker_pids()

        result = sb.run(program(poison), handler, TOOLS)
        if isinstance(expected, type):
            assert type(result.error) is expected, repr(result.error)
        else:
            assert result.error is None, result.error
            assert result.value == expected

        for _ in range(2):  # twice: the first honest run must leave the worker clean too
            honest = sb.run(HONEST, handler, TOOLS)
            assert honest.error is None, honest.error
            assert honest.value == 35_000_000
        if reused:  # collected: the same worker, no restart
            assert sb.worker_pids() == [pid]
        else:  # a limit ends the worker anyway: a fresh one ran the honest program
            assert _wait_for(lambda: len(sb.worker_pids()) == 1)
            assert sb.worker_pids() != [pid]


def test_validation_accepts_the_poisons() -> None:
    """The poisons are ordinary programs: only cleaning up stops them from doing harm."""
    for _, poison, *_ in POISONS:
        result = run_inprocess(program(poison.replace(BIG, "[0] * 10")), handler, TOOLS,
                               limits=LIMITS)  # fmt: skip
        assert type(result.error) is not ValidationError, (poison, result.error)


def test_many_programs_reuse_one_worker() -> None:
    with Sandbox(LIMITS, workers=1) as sb:
        assert sb.run(program("return 0"), handler, TOOLS).value == 0
        pids = sb.worker_pids()
        for i in range(4):
            poison = sb.run(program(f"a = {BIG}\na.append(a)\nreturn {i}"), handler, TOOLS)
            assert poison.value == i, poison.error
            assert sb.run(HONEST, handler, TOOLS).value == 35_000_000
        assert sb.worker_pids() == pids


# --- the memory check: a worker whose memory did not come back is replaced ----------------
STASH = """
def execute_command(image):
    for c in ().__class__.__base__.__subclasses__():
        if c.__name__ == "_wrap_close":
            c.__init__.__globals__["_kept"] = {value}
    return 1
"""
STASH_BIG = STASH.format(value=BIG)  # 280 MB of address space
STASH_SMALL = STASH.format(value="[str(i) for i in range(300_000)]")  # 300,000 small objects


def _run_raw(sources: list[str]) -> list[dict]:
    """Run programs one after the other on one worker, skipping validation (as if a
    program had found a way to keep objects alive past the collection)."""
    worker = WorkerProcess(LIMITS.memory_mb)
    outcomes = []
    try:
        worker.wait_ready(time.monotonic() + 10)
        for source in sources:
            message = {"op": "run", "source": source, "tools": [], "image": {},
                       "limits": LIMITS.worker_limits()}  # fmt: skip
            worker.send(json.dumps(message), time.monotonic() + 10)
            outcomes.append(worker.recv(time.monotonic() + 20, LIMITS.max_message_bytes))
    finally:
        worker.kill()
    return outcomes


def test_worker_reports_address_space_that_did_not_come_back() -> None:
    kept, honest = _run_raw([STASH_BIG, HONEST])
    assert kept["ok"] and kept["value"] == 1  # the result stands ...
    assert kept["fatal"] is True  # ... but the worker asks to be replaced
    assert "address space" in kept["recycle"]
    # the check is not over-cautious: reused anyway, this worker fails an honest program
    assert not honest["ok"] and honest["error"]["kind"] == "memory"


def test_worker_reports_small_objects_left_allocated() -> None:
    kept, honest = _run_raw([STASH_SMALL, program("return 1")])
    assert kept["ok"] and kept["fatal"] is True
    assert "objects left allocated" in kept["recycle"]
    assert honest["ok"]


def test_clean_worker_does_not_ask_to_be_replaced() -> None:
    outcomes = _run_raw([program(poison) for _, poison, *_ in POISONS[:3]] + [HONEST])
    assert [o["ok"] for o in outcomes] == [True] * 4
    assert not any(o["fatal"] for o in outcomes)
    assert "recycle" not in outcomes[-1]


def test_sandbox_replaces_a_worker_whose_memory_did_not_come_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sandbox_pool, "validate_program", lambda *args, **kwargs: None)
    with Sandbox(LIMITS, workers=1) as sb:
        assert sb.run(program("return 0"), handler, TOOLS).value == 0
        (pid,) = sb.worker_pids()
        kept = sb.run(STASH_BIG, handler, TOOLS)
        assert kept.error is None and kept.value == 1  # the result stands
        honest = sb.run(HONEST, handler, TOOLS)
        assert honest.error is None, honest.error
        assert honest.value == 35_000_000
        assert pid not in sb.worker_pids()


FINALIZER = f"""
def execute_command(image):
    def gen(box):
        try:
            yield 1
        finally:
            for c in ().__class__.__base__.__subclasses__():
                if c.__name__ == "_wrap_close":
                    c.__init__.__globals__["system"]("touch {SENTINEL}")
    box = []
    g = gen(box)
    box.append(g)
    for _ in g:
        break
    return 1
"""


def test_code_run_by_the_collection_stays_inside_the_sandbox() -> None:
    """A suspended generator in a cycle runs its ``finally`` when collected: that happens
    under the program's audit hook, and an offence there ends the worker."""
    SENTINEL.unlink(missing_ok=True)
    (outcome,) = _run_raw([FINALIZER])
    assert not outcome["ok"]
    assert outcome["error"]["kind"] == "forbidden"
    assert outcome["fatal"] is True
    assert not SENTINEL.exists()


# --- in-process ---------------------------------------------------------------------------
@pytest.fixture
def gc_disabled():
    """No automatic collection: whatever is freed was freed by the runner itself."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _traced_after(source: str) -> tuple[object, int]:
    """Run ``source`` in-process; returns (result, bytes still allocated afterwards)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = run_inprocess(source, handler, TOOLS, limits=LIMITS)
        return result, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


SMALL_BIG = "[0] * 5_000_000"  # 40 MB


@pytest.mark.parametrize(
    "body",
    [
        f"a = {SMALL_BIG}\nb = [a]\na.append(b)\nreturn 1",
        f"d = {{'big': {SMALL_BIG}}}\nd['me'] = d\nreturn 1",
        f"big = {SMALL_BIG}\nf = lambda: (big, f)\nreturn 1",
        f"a = {SMALL_BIG}\na.append(a)\nreturn 1 / 0",
        f"a = {SMALL_BIG}\na.append(a)\nreturn count('bad')",
    ],
    ids=["list_cycle", "dict_cycle", "closure_cycle", "exception", "tool_error"],
)
def test_inprocess_runner_collects_cycles(gc_disabled, body: str) -> None:
    result, left = _traced_after(program(body))
    assert result.value == 1 or result.error is not None
    assert left < 4_000_000, f"{left} bytes of the program are still alive"


def test_inprocess_runner_collects_cycles_promoted_to_old_generations() -> None:
    """Objects that lived through automatic collections during the program are found too."""
    before = sandbox_worker._gc_collections()
    body = f"a = {SMALL_BIG}\na.append(a)\njunk = [[i] for i in range(300_000)]\nreturn 1"
    result, left = _traced_after(program(body))
    assert result.value == 1, result.error
    assert sandbox_worker._gc_collections()[1] > before[1]  # a promotion did happen
    assert left < 4_000_000, f"{left} bytes of the program are still alive"


def test_inprocess_trivial_program_collects_only_the_young_generation(gc_disabled) -> None:
    generations: list[int] = []

    def record(phase: str, info: dict) -> None:
        if phase == "start":
            generations.append(info["generation"])

    gc.callbacks.append(record)
    try:
        assert run_inprocess(program("return count('x')"), handler, TOOLS).value == 3
    finally:
        gc.callbacks.remove(record)
    assert generations == [0]


def test_generation_rule() -> None:
    rule = sandbox_worker._generation_to_collect
    assert rule((5, 2, 1), (5, 2, 1)) == 0
    assert rule((5, 2, 1), (9, 2, 1)) == 1
    assert rule((5, 2, 1), (9, 3, 1)) == 2
    assert rule((5, 2, 1), (9, 2, 2)) == 2


def _fails_with_a_local() -> None:
    marker = "the caller's variable"  # noqa: F841 - inspected through the traceback
    raise KeyError("caller")


def test_inprocess_runner_leaves_the_callers_exception_alone() -> None:
    """Run while the caller handles an exception (the program's exception then has it as
    context): the runner empties the program's frames, never the caller's."""
    try:
        _fails_with_a_local()
    except KeyError as exc:
        result = run_inprocess(program("a = [1]\na.append(a)\nreturn 1 / 0"), handler, TOOLS)
        assert type(result.error) is SandboxError
        tb = exc.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        assert tb.tb_frame.f_locals["marker"] == "the caller's variable"
