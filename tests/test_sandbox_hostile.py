"""Hostile programs: every one must end in the expected typed error, within its limits,
without harming the parent, and the same Sandbox must keep working afterwards."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from viper_rs.core.errors import (
    SandboxError,
    SandboxTimeout,
    ToolError,
    UnknownConceptError,
    ValidationError,
    ViperError,
)
from viper_rs.sandbox import Limits, Sandbox, run_inprocess
from viper_rs.sandbox.process import WorkerProcess

LIMITS = Limits(
    wall_s=2.0,
    cpu_s=1.0,
    memory_mb=256,
    max_output_chars=2_000,
    max_tool_calls=50,
    max_result_chars=20_000,
)
TOOLS = ["find", "count", "exists", "area", "left_of"]
SENTINEL = Path("/tmp/viper_sandbox_escape_sentinel")
NORMAL = """
def execute_command(image):
    return count("building") + len(find("building"))
"""


def handler(name: str, args: list, kwargs: dict):
    if name == "find":
        return [{"__region__": 1, "label": "building", "area_m2": 12.5, "bbox": [0, 0, 4, 4]}]
    if name == "count":
        if args and args[0] == "bad":
            raise ToolError("count() expects a known concept, got 'bad'")
        if args and args[0] == "unicorn":
            raise UnknownConceptError("unknown concept 'unicorn'")
        if args and args[0] == "crash":
            raise KeyError("boom")
        return 3
    if name == "exists":
        return True
    if name == "area":
        return 10.0
    return None


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(LIMITS, workers=2) as sb:
        yield sb


def program(body: str) -> str:
    return "def execute_command(image):\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ")


# (id, source, accepted error classes (exact), extra check on the message or None)
HOSTILE: list[tuple[str, str | bytes, tuple[type[ViperError], ...], str | None]] = [
    # --- imports and dunder walks (validation) -------------------------------------------
    ("import", "import os\n" + program("return os.environ"), (ValidationError,), "import"),
    ("import_inside", program("import subprocess\nreturn 1"), (ValidationError,), "import"),
    (
        "from_import",
        program("from os import environ\nreturn environ"),
        (ValidationError,),
        "import",
    ),
    ("dunder_import", program("return __import__('os').environ"), (ValidationError,), None),
    (
        "subclasses_walk",
        program("return ().__class__.__bases__[0].__subclasses__()"),
        (ValidationError,),
        "__class__",
    ),
    (
        "getattr_built_string",
        program("return getattr(image, '_' + '_class__')"),
        (ValidationError,),
        "getattr",
    ),
    (
        "str_format_attribute",
        program("return '{0.__class__}'.format(1)"),
        (ValidationError,),
        "format",
    ),
    ("str_format_via_variable", program("f = 'x'.format\nreturn f"), (ValidationError,), "format"),
    (
        "format_map",
        program("return '{x.__class__}'.format_map({'x': 1})"),
        (ValidationError,),
        "format_map",
    ),
    (
        "generator_frame_walk",
        program("g = (x for x in [1])\nreturn g.gi_frame.f_back.f_globals"),
        (ValidationError,),
        "gi_frame",
    ),
    (
        "coroutine_frame",
        "async def f():\n    pass\n" + program("return f().cr_frame"),
        (ValidationError,),
        None,
    ),
    (
        "traceback_walk",
        program("t = image\nreturn t.tb_frame.f_globals"),
        (ValidationError,),
        "tb_frame",
    ),
    ("eval", program("return eval('1+1')"), (ValidationError,), "eval"),
    ("exec", program("exec('x = 1')\nreturn 1"), (ValidationError,), "exec"),
    ("compile", program("return compile('1', 'f', 'eval')"), (ValidationError,), "compile"),
    ("open_read", program("return open('/etc/passwd').read()"), (ValidationError,), "open"),
    (
        "open_write",
        program(f"open('{SENTINEL}', 'w').write('x')\nreturn 1"),
        (ValidationError,),
        "open",
    ),
    ("breakpoint", program("breakpoint()\nreturn 1"), (ValidationError,), "breakpoint"),
    ("help", program("return help"), (ValidationError,), "help"),
    ("input", program("return input()"), (ValidationError,), "input"),
    ("type_new_class", program("X = type('X', (), {})\nreturn X"), (ValidationError,), "type"),
    ("object_subclasses", program("return object.__subclasses__()"), (ValidationError,), None),
    ("globals", program("return globals()"), (ValidationError,), "globals"),
    ("vars", program("return vars(image)"), (ValidationError,), "vars"),
    ("locals", program("return locals()"), (ValidationError,), "locals"),
    ("mro_walk", program("return int.mro()[-1]"), (ValidationError,), "mro"),
    ("codec_import", program("return 'x'.encode('idna')"), (ValidationError,), "encode"),
    # --- forbidden statements ------------------------------------------------------------
    (
        "class_definition",
        "class Evil:\n    pass\n" + program("return 1"),
        (ValidationError,),
        "class",
    ),
    (
        "try_except_swallow",
        program("try:\n    return count('bad')\nexcept Exception:\n    return False"),
        (ValidationError,),
        "try",
    ),
    ("raise", program("raise SystemExit(0)"), (ValidationError,), "raise"),
    ("with_statement", program("with image:\n    return 1"), (ValidationError,), "with"),
    ("global_statement", program("global count\nreturn 1"), (ValidationError,), "global"),
    (
        "yield_generator_function",
        "def gen():\n    yield 1\n" + program("return list(gen())"),
        (ValidationError,),
        "yield",
    ),
    (
        "lambda_default_arg_trick",
        program("f = lambda x, g=globals: g()\nreturn f(1)"),
        (ValidationError,),
        "globals",
    ),
    (
        "closure_cell_walk",
        "def outer():\n    secret = 1\n    def inner():\n        return secret\n"
        "    return inner\n" + program("return outer().__closure__[0].cell_contents"),
        (ValidationError,),
        "__closure__",
    ),
    (
        "region_private_attribute",
        program("r = find('building')[0]\nreturn r._raw"),
        (ValidationError,),
        "_raw",
    ),
    (
        "region_mutation",
        program("r = find('building')[0]\nr.area_m2 = 1e9\nreturn r"),
        (ValidationError,),
        "assignment to attribute",
    ),
    (
        "assign_over_builtin",
        program("len = lambda x: 0\nreturn len([1])"),
        (ValidationError,),
        "builtin",
    ),
    (
        "assign_over_tool",
        program("count = lambda x: 0\nreturn count('x')"),
        (ValidationError,),
        "tool",
    ),
    ("unknown_name_call", program("return os_system('id')"), (ValidationError,), "unknown name"),
    (
        "decorator",
        "def deco(f):\n    return f\n@deco\n" + program("return 1"),
        (ValidationError,),
        "decorator",
    ),
    # --- malformed sources ---------------------------------------------------------------
    ("deep_nesting", program("return " + "(" * 100_000 + ")" * 100_000), (ValidationError,), None),
    ("deep_unary", program("return " + "-" * 15_000 + "1"), (ValidationError,), None),
    ("null_bytes", program("return 1") + "\x00", (ValidationError,), "null"),
    (
        "non_utf8_bytes",
        b"def execute_command(image):\n    return '\xff\xfe'",
        (ValidationError,),
        "UTF-8",
    ),
    ("huge_source", program("return 1") + "\n#" + "x" * 100_000, (ValidationError,), "too long"),
    (
        "missing_execute_command",
        "def main(image):\n    return 1",
        (ValidationError,),
        "execute_command",
    ),
    (
        "wrong_arity",
        "def execute_command(image, question):\n    return 1",
        (ValidationError,),
        "exactly one",
    ),
    ("no_arguments", "def execute_command():\n    return 1", (ValidationError,), "exactly one"),
    # --- resource exhaustion (runtime) ---------------------------------------------------
    ("infinite_loop", program("while True:\n    pass"), (SandboxTimeout,), None),
    ("cpu_bomb_power", program("return 10 ** 10 ** 8"), (SandboxTimeout,), None),
    ("cpu_bomb_sum", program("return sum(range(10 ** 12))"), (SandboxTimeout,), None),
    ("memory_bomb_string", program("return len('a' * 10 ** 10)"), (SandboxError,), "memory"),
    ("memory_bomb_list", program("return len([0] * 10 ** 10)"), (SandboxError,), "memory"),
    (
        "memory_bomb_growth",
        program("xs = []\nwhile True:\n    xs.append('x' * 10 ** 6)"),
        (SandboxError, SandboxTimeout),
        None,
    ),
    ("memory_bomb_fstring", program("return f'{1:>99999999999}'"), (SandboxError,), None),
    (
        "recursion_bomb",
        "def f(n):\n    return f(n + 1)\n" + program("return f(0)"),
        (SandboxError,),
        "recursion",
    ),
    (
        "mutual_recursion_bomb",
        "def a(n):\n    return b(n)\ndef b(n):\n    return a(n)\n" + program("return a(0)"),
        (SandboxError,),
        "recursion",
    ),
    ("output_bomb", program("while True:\n    print('spam' * 100)"), (SandboxError,), "output"),
    ("huge_return_value", program("return 'x' * 10 ** 6"), (SandboxError,), "too large"),
    ("huge_return_list", program("return list(range(10 ** 6))"), (SandboxError,), "too large"),
    (
        "self_referencing_return",
        program("xs = []\nxs.append(xs)\nreturn xs"),
        (SandboxError,),
        "nested",
    ),
    ("unserialisable_return", program("return (x for x in [1])"), (SandboxError,), "plain data"),
    ("huge_int_return", program("return 7 ** 20000"), (SandboxError,), None),
    # --- tool abuse ----------------------------------------------------------------------
    ("tool_call_flood", program("while True:\n    count('x')"), (SandboxError,), "tool call limit"),
    ("bad_tool_arguments", program("return count('bad')"), (ToolError,), "known concept"),
    (
        "unknown_concept_class_kept",
        program("return exists('tree') and count('unicorn')"),
        (UnknownConceptError,),
        "unicorn",
    ),
    (
        "tool_error_not_swallowable",
        program("xs = [count(c) for c in ['x', 'bad', 'y']]\nreturn any([True, xs])"),
        (ToolError,),
        None,
    ),
    ("handler_internal_error", program("return count('crash')"), (ToolError,), "internal error"),
    ("function_as_tool_argument", program("return count(lambda: 1)"), (ToolError,), "function"),
    ("huge_tool_argument", program("return count('x' * 10 ** 6)"), (ToolError,), "too large"),
    # --- misc runtime faults -------------------------------------------------------------
    ("print_to_file", program("print('x', file=1)\nreturn 1"), (SandboxError,), "file"),
    (
        "region_mutation_runtime",
        program("r = find('building')[0]\nr.bbox.append(1)\nreturn r"),
        (SandboxError,),
        "AttributeError",
    ),
    ("int_str_bomb", program("return str(10 ** 100000)"), (SandboxError,), "ValueError"),
]


def test_enough_hostile_programs() -> None:
    assert len(HOSTILE) >= 35
    assert len({name for name, *_ in HOSTILE}) == len(HOSTILE)


@pytest.mark.parametrize(
    ("source", "expected", "match"),
    [(s, e, m) for _, s, e, m in HOSTILE],
    ids=[name for name, *_ in HOSTILE],
)
def test_hostile_program(sandbox: Sandbox, source, expected, match) -> None:
    parent = os.getpid()
    started = time.perf_counter()
    result = sandbox.run(source, handler, TOOLS, image_info={"width": 64, "height": 64})
    elapsed = time.perf_counter() - started

    assert result.error is not None, f"hostile program succeeded: {result.value!r}"
    assert type(result.error) in expected, repr(result.error)
    if match is not None:
        assert match in str(result.error), str(result.error)
    assert result.value is None
    assert result.error.to_dict()["type"] == result.error.type
    # within limits: validation is immediate, runtime faults end near their budget
    if expected == (ValidationError,):
        assert elapsed < 1.0
        assert result.tool_calls == 0
    else:
        assert elapsed < LIMITS.wall_s + 2.0
        assert len(result.stdout) <= LIMITS.max_output_chars
        assert result.tool_calls <= LIMITS.max_tool_calls
    # the parent survived and the same Sandbox still works
    assert os.getpid() == parent
    after = sandbox.run(NORMAL, handler, TOOLS)
    assert after.error is None, after.error
    assert after.value == 4
    assert not SENTINEL.exists()


def test_wall_clock_limit_kills_the_worker() -> None:
    """With a CPU budget larger than the wall budget the parent's wall clock must win."""
    limits = Limits(wall_s=0.5, cpu_s=30)
    with Sandbox(limits, workers=1) as sb:
        started = time.perf_counter()
        result = sb.run(program("while True:\n    pass"), handler, TOOLS)
        elapsed = time.perf_counter() - started
        assert type(result.error) is SandboxTimeout
        assert "wall-clock" in str(result.error)
        assert elapsed < 2.0
        assert sb.run(NORMAL, handler, TOOLS).value == 4


def test_handler_errors_keep_their_class_in_process() -> None:
    result = run_inprocess(program("return count('unicorn')"), handler, TOOLS, limits=LIMITS)
    assert type(result.error) is UnknownConceptError
    result = run_inprocess(program("return count('crash')"), handler, TOOLS, limits=LIMITS)
    assert type(result.error) is ToolError


# --- no escape -----------------------------------------------------------------------------
def test_worker_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIPER_SECRET", "hunter2")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
    with Sandbox(LIMITS, workers=1) as sb:
        assert sb.run(NORMAL, handler, TOOLS).value == 4  # worker is up and ready
        for pid in sb.worker_pids():
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert b"VIPER_SECRET" not in environ and b"hunter2" not in environ
            assert b"OPENAI_API_KEY" not in environ
            assert sorted(Path(f"/proc/{pid}/fd").iterdir(), key=str) != []
            assert {p.name for p in Path(f"/proc/{pid}/fd").iterdir()} == {"0", "1", "2"}
            limits = Path(f"/proc/{pid}/limits").read_text()
            assert _limit(limits, "Max address space") == str(256 * 1024 * 1024)
            assert _limit(limits, "Max file size") == "0"
            assert _limit(limits, "Max open files") == "3"
            assert _limit(limits, "Max core file size") == "0"


def _limit(table: str, name: str) -> str:
    for line in table.splitlines():
        if line.startswith(name):
            return line[len(name) :].split()[0]
    raise AssertionError(f"{name} not in /proc limits")


ESCAPE_ENVIRON = """
def execute_command(image):
    for c in ().__class__.__base__.__subclasses__():
        if c.__name__ == "_wrap_close":
            return dict(c.__init__.__globals__["environ"])
    return None
"""
ESCAPE_WRITE = f"""
def execute_command(image):
    for c in ().__class__.__base__.__subclasses__():
        if c.__name__ == "_wrap_close":
            b = c.__init__.__globals__["__builtins__"]
            return b["open"]("{SENTINEL}", "w").write("escaped")
    return None
"""
ESCAPE_SYSTEM = f"""
def execute_command(image):
    for c in ().__class__.__base__.__subclasses__():
        if c.__name__ == "_wrap_close":
            return c.__init__.__globals__["system"]("touch {SENTINEL}")
    return None
"""
ESCAPE_FRAME = """
def execute_command(image):
    g = (x for x in [1])
    return str(g.gi_frame.f_back.f_globals)
"""


def _run_unvalidated(source: str) -> dict:
    """Send a program straight to a worker, skipping validation (layer 2 on its own)."""
    worker = WorkerProcess(LIMITS.memory_mb)
    try:
        worker.wait_ready(time.monotonic() + 10)
        message = {"op": "run", "source": source, "tools": [], "image": {},
                   "limits": LIMITS.worker_limits()}  # fmt: skip
        worker.send(json.dumps(message), time.monotonic() + 5)
        return worker.recv(time.monotonic() + 5, LIMITS.max_message_bytes)
    finally:
        worker.kill()


def test_validation_blocks_the_escapes() -> None:
    for source in (ESCAPE_ENVIRON, ESCAPE_WRITE, ESCAPE_SYSTEM, ESCAPE_FRAME):
        result = run_inprocess(source, handler, TOOLS)
        assert type(result.error) is ValidationError


def test_worker_alone_hides_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even if validation were bypassed, os.environ in the worker holds no secret."""
    monkeypatch.setenv("VIPER_SECRET", "hunter2")
    outcome = _run_unvalidated(ESCAPE_ENVIRON)
    assert outcome["ok"], outcome
    assert "VIPER_SECRET" not in outcome["value"]
    assert "hunter2" not in json.dumps(outcome)
    assert set(outcome["value"]) <= {"PATH", "LANG", "LC_CTYPE"}


@pytest.mark.parametrize("source", [ESCAPE_WRITE, ESCAPE_SYSTEM, ESCAPE_FRAME],
                         ids=["write_file", "os_system", "frame_walk"])  # fmt: skip
def test_worker_alone_blocks_io_and_frames(source: str) -> None:
    """Even if validation were bypassed, the worker's audit hook stops files, processes
    and frame access, and no file appears."""
    outcome = _run_unvalidated(source)
    assert not outcome["ok"]
    assert outcome["error"]["kind"] == "forbidden"
    assert outcome["fatal"] is True
    assert not SENTINEL.exists()


# --- a misbehaving worker process cannot hurt the parent ----------------------------------
FAKE_WORKER = """
import json, os, signal, struct, sys, time
MODE = {mode!r}
out, inp = sys.stdout.buffer, sys.stdin.buffer

def send(obj):
    data = json.dumps(obj).encode()
    out.write(struct.pack(">I", len(data)) + data)
    out.flush()

send({{"op": "ready", "pid": os.getpid(), "cpu": 0.0}})
size = struct.unpack(">I", inp.read(4))[0]
inp.read(size)
if MODE == "oversize":
    out.write(struct.pack(">I", 2 ** 31) + b"x" * 100_000)
    out.flush()
    time.sleep(30)
elif MODE == "garbage":
    out.write(struct.pack(">I", 4) + b"\\xff{{[}}")
    out.flush()
    time.sleep(30)
elif MODE == "segfault":
    os.kill(os.getpid(), signal.SIGSEGV)
elif MODE == "exit":
    sys.exit(3)
elif MODE == "silent":
    time.sleep(30)
"""


@pytest.mark.parametrize(
    ("mode", "expected", "match"),
    [
        ("oversize", SandboxError, "exceeds"),
        ("garbage", SandboxError, "undecodable"),
        ("segfault", SandboxError, "SIGSEGV"),
        ("exit", SandboxError, "code 3"),
        ("silent", SandboxTimeout, "wall-clock"),
    ],
)
def test_misbehaving_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode, expected, match):
    from viper_rs.sandbox import process

    script = tmp_path / f"fake_worker_{mode}.py"
    script.write_text(FAKE_WORKER.format(mode=mode))
    monkeypatch.setattr(process, "WORKER_PATH", script)
    with Sandbox(Limits(wall_s=1.0, cpu_s=1.0), workers=1) as sb:
        started = time.perf_counter()
        result = sb.run(NORMAL, handler, TOOLS)
        assert type(result.error) is expected, result.error
        assert match in str(result.error)
        assert time.perf_counter() - started < 3.0
        pids = sb.worker_pids()
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)
