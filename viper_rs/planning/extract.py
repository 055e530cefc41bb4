"""Programs out of model replies, and the answer kind a program returns.

A reply may be a bare function, a fenced code block, or prose around code; reasoning
models may also wrap their thoughts in ``<think>`` tags. :func:`extract_program` finds
``def execute_command`` and returns its source; statements a model adds around the
function (``print(execute_command(image))``, ``if __name__ == "__main__":``) are dropped
and reported. The result is still untrusted: the sandbox validates it.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass, field

from viper_rs.core.errors import ValidationError
from viper_rs.tools.registry import REGISTRY

ENTRY = "execute_command"

_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"^[ \t]*```[ \t]*(?P<lang>[\w+.-]*)[^\n]*\n(?P<code>.*?)(?:^[ \t]*```|\Z)",
                    re.DOTALL | re.MULTILINE)
_DEF = re.compile(rf"^(?P<indent>[ \t]*)def[ \t]+{ENTRY}[ \t]*\(", re.MULTILINE)
_CODE_LANGS = frozenset({"", "python", "py", "python3", "py3"})

NO_PROGRAM = (
    f"the reply contains no program: expected one Python function `def {ENTRY}(image):` "
    "in a ```python block"
)


@dataclass
class Extracted:
    """A program found in a reply; ``form`` is "fenced", "bare" or "prose"."""

    program: str
    form: str
    dropped: list[str] = field(default_factory=list)


def extract_program(reply: str | None) -> Extracted:
    """The ``execute_command`` program in a model reply.

    Raises :class:`ValidationError` when the reply has no code defining ``execute_command``.
    """
    text = _THINK.sub("", reply or "").replace("\r\n", "\n")
    blocks = [(m["lang"].lower(), m["code"]) for m in _FENCE.finditer(text)]
    with_entry = [code for _, code in blocks if _DEF.search(code)]
    if with_entry:
        source, form = with_entry[-1], "fenced"
    elif _DEF.search(text):
        source, rest = _function_at(text, _DEF.search(text))
        form = "bare" if not rest.strip() else "prose"
    else:
        code_blocks = [code for lang, code in blocks if lang in _CODE_LANGS and code.strip()]
        if not code_blocks:
            raise ValidationError(NO_PROGRAM)
        source, form = code_blocks[0], "fenced"  # the validator names what is missing
    program, dropped = _drop_extras(textwrap.dedent(source).strip("\n") + "\n")
    return Extracted(program, form, dropped)


def _function_at(text: str, match: re.Match[str]) -> tuple[str, str]:
    """(the function starting at ``match`` up to its last indented line, the text around it)."""
    indent = len(match["indent"].expandtabs())
    lines = text[match.start():].split("\n")
    end = 1
    for i, line in enumerate(lines[1:], start=1):
        if not line.strip():
            continue
        if len(line.expandtabs()) - len(line.expandtabs().lstrip()) <= indent:
            break
        end = i + 1
    func = "\n".join(lines[:end])
    rest = text[: match.start()] + "\n".join(lines[end:])
    return func, rest


def _drop_extras(program: str) -> tuple[str, list[str]]:
    """Remove module-level calls of the entry point and ``__main__`` blocks."""
    try:
        tree = ast.parse(program)
    except SyntaxError:
        return program, []
    lines = program.split("\n")
    remove: list[tuple[int, int]] = []
    for stmt in tree.body:
        if _is_usage(stmt):
            remove.append((stmt.lineno, stmt.end_lineno or stmt.lineno))
    if not remove:
        return program, []
    dropped = ["\n".join(lines[a - 1: b]).strip() for a, b in remove]
    drop = {n for a, b in remove for n in range(a, b + 1)}
    kept = [line for n, line in enumerate(lines, start=1) if n not in drop]
    return "\n".join(kept).strip("\n") + "\n", dropped


def _is_usage(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.If):
        test = ast.unparse(stmt.test).replace("'", '"')
        return "__name__" in test
    if isinstance(stmt, ast.Expr | ast.Assign | ast.AnnAssign | ast.AugAssign):
        value = stmt.value
        if value is None or isinstance(value, ast.Constant):
            return False
        return any(isinstance(n, ast.Name) and n.id in (ENTRY, "image") for n in ast.walk(value))
    return False


# --------------------------------------------------------------------------- answer kind

#: Builtins whose result decides the kind of answer (the tools' kinds are the registry's).
_BUILTIN_KINDS = {"len": "count"}
#: Builtins that pass the kind of their first argument through.
_PASS_THROUGH = frozenset({"round", "abs", "float", "int", "max", "min", "sum", "sorted"})
_NUMBER = "number"


def _call_kinds() -> dict[str, str]:
    """Callable name -> the answer kind its result gives: the registered tools' first
    :attr:`~viper_rs.tools.Tool.kinds`, and ``len``."""
    return {**{name: kinds[0] for name, kinds in REGISTRY.kinds().items()}, **_BUILTIN_KINDS}


def infer_kind(program: str) -> str:
    """The answer kind a program returns ("presence", "count", "area", "comparison" or
    "other"), read from its return statements; "other" when mixed or unclear."""
    try:
        tree = ast.parse(program)
    except SyntaxError:
        return "other"
    entry = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == ENTRY), None)
    if entry is None:
        return "other"
    assigned: dict[str, ast.expr] = {}
    for node in ast.walk(entry):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                assigned.setdefault(target.id, node.value)
    calls = _call_kinds()
    kinds = [_kind(r.value, assigned, 0, calls) for r in ast.walk(entry)
             if isinstance(r, ast.Return) and r.value is not None]
    return _merge(kinds) or "other"


def _merge(kinds: list[str | None]) -> str | None:
    known = {k for k in kinds if k is not None and k != _NUMBER}
    if not known:
        return None
    if len(known) == 1:
        return known.pop()
    if known <= {"presence", "comparison"}:
        return "presence"
    return "other"


def _kind(node: ast.expr | None, assigned: dict[str, ast.expr], depth: int,
          calls: dict[str, str]) -> str | None:
    """Kind of an expression: a kind, ``_NUMBER`` for a number literal (neutral in guards
    such as ``return 0.0``), or None when unknown; ``calls`` is :func:`_call_kinds`."""
    if node is None or depth > 8:
        return None
    rec = lambda n: _kind(n, assigned, depth + 1, calls)  # noqa: E731
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool):
            return "presence"
        if isinstance(node.value, str):
            return "other"
        return _NUMBER if isinstance(node.value, int | float) else None
    if isinstance(node, ast.Name):
        return rec(assigned.get(node.id))
    if isinstance(node, ast.Attribute):
        return "area" if node.attr == "area_m2" else None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        if name in calls:
            return calls[name]
        if name in _PASS_THROUGH and node.args:
            return rec(node.args[0])
        return None
    if isinstance(node, ast.GeneratorExp | ast.ListComp):
        return rec(node.elt)
    if isinstance(node, ast.IfExp):
        return _merge([rec(node.body), rec(node.orelse)])
    if isinstance(node, ast.BinOp):
        left, right = rec(node.left), rec(node.right)
        if isinstance(node.op, ast.Add | ast.Sub):
            return _merge([left, right])
        if isinstance(node.op, ast.Div) and right == "count" and left not in (None, _NUMBER):
            return left  # a mean per instance keeps its unit
        return "other"  # ratios, percentages, unit conversions
    if isinstance(node, ast.Compare):
        sides = [node.left, *node.comparators]
        measured = sum(any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                           and n.func.id in calls for n in ast.walk(s)) for s in sides)
        return "comparison" if measured >= 2 else "presence"
    if isinstance(node, ast.BoolOp) or (
        isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
    ):
        return "presence"
    if isinstance(node, ast.UnaryOp):
        return rec(node.operand)
    return None
