"""Static validation of untrusted programs (layer 1 of the sandbox).

A program is accepted only if it is a module of function definitions (plus constant
assignments and a docstring) defining ``execute_command(image)``, built from a whitelist
of AST node types, using only whitelisted builtins, tool names and its own names, and
never touching a name or attribute that starts with ``_`` or that belongs to the
deny-list of frame/code/format-injection attributes.

Decisions worth knowing:

* ``pow`` is not a whitelisted builtin: ``**`` already covers it and the CPU limit
  bounds both. ``hasattr``/``getattr``/``callable``/``iter``/``next`` are not offered.
* ``try``/``raise``/``with`` are rejected so that a failure can never be swallowed and
  turned into an answer; ``assert`` is allowed (it can only make the program fail).
* Annotations are accepted but compiled as strings (PEP 563), so they are never
  evaluated; they are still checked for forbidden names and attributes.
* ``str.encode``/``bytes.decode`` are denied: codecs can import modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from viper_rs.core.errors import ValidationError

__all__ = [
    "ALLOWED_BUILTINS",
    "FORBIDDEN_NAMES",
    "DENIED_ATTRIBUTES",
    "MAX_AST_DEPTH",
    "validate_program",
]

#: Builtins a program may use (the worker offers exactly these, plus a capturing print).
ALLOWED_BUILTINS: frozenset[str] = frozenset(
    {
        "abs", "all", "any", "bool", "dict", "divmod", "enumerate", "filter", "float",
        "frozenset", "int", "isinstance", "len", "list", "map", "max", "min", "print",
        "range", "reversed", "round", "set", "sorted", "str", "sum", "tuple", "zip",
    }
)  # fmt: skip

#: Names rejected wherever they appear (called or merely referenced).
FORBIDDEN_NAMES: frozenset[str] = frozenset(
    {
        "getattr", "setattr", "delattr", "hasattr", "vars", "dir", "globals", "locals",
        "eval", "exec", "compile", "open", "input", "breakpoint", "help", "type",
        "object", "super", "memoryview", "id", "hash", "classmethod", "staticmethod",
        "property", "__import__", "exit", "quit", "format", "callable", "iter", "next",
        "aiter", "anext", "bytearray", "license", "credits", "copyright", "reload",
        "execfile", "file", "raw_input", "__builtins__", "__loader__", "__spec__",
    }
)  # fmt: skip

#: Attributes usable for frame/code walking, format injection or module loading.
DENIED_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "gi_frame", "gi_code", "gi_yieldfrom", "gi_running", "gi_suspended",
        "cr_frame", "cr_code", "cr_await", "cr_origin", "cr_running", "cr_suspended",
        "ag_frame", "ag_code", "ag_await", "ag_running",
        "tb_frame", "tb_next", "tb_lasti", "tb_lineno",
        "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "f_trace",
        "f_lasti", "f_lineno", "f_trace_lines", "f_trace_opcodes",
        "co_code", "co_consts", "co_names", "co_varnames", "co_filename",
        "func_globals", "func_code", "func_closure", "func_defaults", "func_dict",
        "im_func", "im_self", "im_class", "cell_contents",
        "mro", "format", "format_map", "vformat", "encode", "decode",
        "load_module", "exec_module", "system", "popen", "modules", "builtins",
        "throw", "send",
    }
)  # fmt: skip

#: Attribute prefixes of frame/code/generator/traceback internals.
DENIED_ATTRIBUTE_PREFIXES: tuple[str, ...] = (
    "_", "gi_", "cr_", "ag_", "tb_", "f_", "co_", "func_", "im_"
)  # fmt: skip

#: Deepest AST accepted (compilation of deeper trees can exhaust the C stack).
MAX_AST_DEPTH = 100

_ALLOWED_NODES: tuple[type, ...] = (
    ast.Module, ast.FunctionDef, ast.Return, ast.Assign, ast.AugAssign, ast.AnnAssign,
    ast.For, ast.While, ast.If, ast.Expr, ast.Pass, ast.Break, ast.Continue, ast.Assert,
    ast.BoolOp, ast.NamedExpr, ast.BinOp, ast.UnaryOp, ast.Lambda, ast.IfExp, ast.Dict,
    ast.Set, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Compare,
    ast.Call, ast.FormattedValue, ast.JoinedStr, ast.Constant, ast.Attribute,
    ast.Subscript, ast.Starred, ast.Name, ast.List, ast.Tuple, ast.Slice,
    ast.Load, ast.Store, ast.boolop, ast.operator, ast.unaryop, ast.cmpop,
    ast.comprehension, ast.arguments, ast.arg, ast.keyword,
)  # fmt: skip

_NODE_DESCRIPTIONS: dict[str, str] = {
    "Import": "import statements",
    "ImportFrom": "import statements",
    "ClassDef": "class definitions",
    "AsyncFunctionDef": "async functions",
    "Await": "await",
    "AsyncFor": "async for",
    "AsyncWith": "async with",
    "Yield": "yield",
    "YieldFrom": "yield from",
    "Try": "try/except (a failure must not be swallowed)",
    "TryStar": "try/except* (a failure must not be swallowed)",
    "Raise": "raise",
    "With": "with statements",
    "Delete": "del",
    "Global": "global",
    "Nonlocal": "nonlocal",
    "Match": "match statements",
}


def _fail(message: str, node: ast.AST | None = None) -> ValidationError:
    line = getattr(node, "lineno", None) if node is not None else None
    if line is not None:
        message = f"line {line}: {message}"
    return ValidationError(message)


def _parse(source: str | bytes, max_source_chars: int) -> ast.Module:
    if isinstance(source, bytes | bytearray):
        try:
            source = bytes(source).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(f"program is not valid UTF-8: {exc.reason}") from None
    if not isinstance(source, str):
        raise ValidationError(f"program must be a string, not {type(source).__name__}")
    if len(source) > max_source_chars:
        raise ValidationError(
            f"program is too long: {len(source)} characters (limit {max_source_chars})"
        )
    if "\x00" in source:
        raise ValidationError("program contains null bytes")
    try:
        source.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("program contains invalid characters (lone surrogates)") from None
    if not source.strip():
        raise ValidationError("program is empty")
    try:
        return ast.parse(source, filename="<program>", mode="exec")
    except SyntaxError as exc:
        where = f"line {exc.lineno}: " if exc.lineno else ""
        raise ValidationError(f"{where}syntax error: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ValidationError("program is nested too deeply to parse") from None
    except (ValueError, OverflowError, TypeError, UnicodeError) as exc:
        raise ValidationError(f"program could not be parsed: {exc}") from None


def _check_depth(tree: ast.AST) -> None:
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_AST_DEPTH:
            raise _fail(f"program is nested too deeply (more than {MAX_AST_DEPTH} levels)", node)
        for child in ast.iter_child_nodes(node):
            stack.append((child, depth + 1))


def _bound_names(tree: ast.Module) -> set[str]:
    """Every name the program binds anywhere (parameters, assignments, defs, targets)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def _is_constant_expr(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return all(_is_constant_expr(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _is_constant_expr(k) for k in node.keys) and all(
            _is_constant_expr(v) for v in node.values
        )
    if isinstance(node, ast.UnaryOp):
        return _is_constant_expr(node.operand)
    if isinstance(node, ast.BinOp):
        return _is_constant_expr(node.left) and _is_constant_expr(node.right)
    return False


class _Checker:
    """Walks a parsed program and raises ValidationError on the first violation."""

    def __init__(self, tool_names: frozenset[str], bound: set[str]) -> None:
        self.tools = tool_names
        self.reserved = tool_names | ALLOWED_BUILTINS
        self.known = bound | tool_names | ALLOWED_BUILTINS

    # -- names -------------------------------------------------------------------------
    def check_identifier(self, name: str, node: ast.AST, what: str) -> None:
        if name.startswith("_"):
            raise _fail(f"{what} {name!r} starts with '_' (not allowed)", node)
        if name in FORBIDDEN_NAMES:
            raise _fail(f"{what} {name!r} is not allowed", node)

    def check_binding(self, name: str, node: ast.AST, what: str) -> None:
        self.check_identifier(name, node, what)
        if name in self.reserved:
            kind = "tool" if name in self.tools else "builtin"
            raise _fail(f"cannot assign to {kind} name {name!r}", node)

    # -- traversal -----------------------------------------------------------------------
    def visit(self, node: ast.AST, annotation: bool = False) -> None:
        if not isinstance(node, _ALLOWED_NODES):
            name = type(node).__name__
            desc = _NODE_DESCRIPTIONS.get(name, name)
            raise _fail(f"{desc} not allowed", node)
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is not None:
            method(node, annotation)
        else:
            self.generic(node, annotation)

    def generic(self, node: ast.AST, annotation: bool) -> None:
        for child in ast.iter_child_nodes(node):
            self.visit(child, annotation)

    def visit_annotation(self, node: ast.AST | None) -> None:
        if node is not None:
            self.visit(node, annotation=True)

    def visit_FunctionDef(self, node: ast.FunctionDef, annotation: bool) -> None:
        if node.decorator_list:
            raise _fail("decorators are not allowed", node.decorator_list[0])
        self.check_binding(node.name, node, "function name")
        self.visit(node.args, annotation)
        self.visit_annotation(node.returns)
        for stmt in node.body:
            self.visit(stmt, annotation)

    def visit_arguments(self, node: ast.arguments, annotation: bool) -> None:
        for arg in [*node.posonlyargs, *node.args, *node.kwonlyargs]:
            self.visit(arg, annotation)
        for arg in (node.vararg, node.kwarg):
            if arg is not None:
                self.visit(arg, annotation)
        for default in [*node.defaults, *node.kw_defaults]:
            if default is not None:
                self.visit(default, annotation)

    def visit_arg(self, node: ast.arg, annotation: bool) -> None:
        self.check_binding(node.arg, node, "parameter")
        self.visit_annotation(node.annotation)

    def visit_AnnAssign(self, node: ast.AnnAssign, annotation: bool) -> None:
        if not isinstance(node.target, ast.Name):
            raise _fail("annotated assignment must target a plain name", node)
        self.visit(node.target, annotation)
        self.visit_annotation(node.annotation)
        if node.value is not None:
            self.visit(node.value, annotation)

    def visit_Name(self, node: ast.Name, annotation: bool) -> None:
        if isinstance(node.ctx, ast.Store):
            self.check_binding(node.id, node, "name")
            return
        self.check_identifier(node.id, node, "name")
        if not annotation and node.id not in self.known:
            raise _fail(f"unknown name {node.id!r} (not a tool, allowed builtin or variable)", node)

    def visit_Attribute(self, node: ast.Attribute, annotation: bool) -> None:
        attr = node.attr
        if not isinstance(node.ctx, ast.Load):
            raise _fail(f"assignment to attribute {attr!r} is not allowed", node)
        self.visit(node.value, annotation)  # report the first violation in reading order
        if attr.startswith(DENIED_ATTRIBUTE_PREFIXES) or attr in DENIED_ATTRIBUTES:
            raise _fail(f"attribute {attr!r} is not allowed", node)

    def visit_Starred(self, node: ast.Starred, annotation: bool) -> None:
        if isinstance(node.ctx, ast.Store) and not isinstance(node.value, ast.Name):
            raise _fail("starred assignment must target a plain name", node)
        self.generic(node, annotation)

    def visit_keyword(self, node: ast.keyword, annotation: bool) -> None:
        if node.arg is not None and node.arg.startswith("_"):
            raise _fail(f"keyword argument {node.arg!r} starts with '_' (not allowed)", node)
        self.visit(node.value, annotation)

    def visit_comprehension(self, node: ast.comprehension, annotation: bool) -> None:
        if node.is_async:
            raise _fail("async comprehensions are not allowed", node.target)
        self.generic(node, annotation)

    def visit_Constant(self, node: ast.Constant, annotation: bool) -> None:
        if node.value is Ellipsis:
            return
        if not isinstance(node.value, str | bytes | int | float | complex | bool | type(None)):
            raise _fail(f"constant of type {type(node.value).__name__} not allowed", node)


def validate_program(
    source: str,
    tool_names: Iterable[str],
    *,
    max_source_chars: int = 20_000,
) -> ast.Module:
    """Check an untrusted program and return its AST.

    Raises :class:`viper_rs.core.errors.ValidationError` (message names the line) when the
    source is too long, unparsable, nested too deeply, uses forbidden syntax, names or
    attributes, or does not define ``execute_command`` with exactly one positional
    parameter.
    """
    tools = frozenset(tool_names)
    for name in tools:
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise ValidationError(f"invalid tool name {name!r}")
    tree = _parse(source, max_source_chars)
    _check_depth(tree)

    entry: ast.FunctionDef | None = None
    for index, stmt in enumerate(tree.body):
        if isinstance(stmt, ast.FunctionDef):
            if stmt.name == "execute_command":
                entry = stmt
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            if index == 0 or isinstance(stmt.value.value, str):
                continue
        if isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if all(isinstance(t, ast.Name) for t in targets) and _is_constant_expr(stmt.value):
                if any(t.id == "execute_command" for t in targets):  # type: ignore[attr-defined]
                    raise _fail("cannot assign to 'execute_command'", stmt)
                continue
        if isinstance(stmt, ast.Pass):
            continue
        kind = _NODE_DESCRIPTIONS.get(type(stmt).__name__)
        if kind is not None:
            raise _fail(f"{kind} not allowed", stmt)
        raise _fail(
            "only function definitions and constant assignments are allowed at module level",
            stmt,
        )
    if entry is None:
        raise ValidationError("program must define a function 'execute_command(image)'")
    args = entry.args
    positional = [*args.posonlyargs, *args.args]
    if (
        len(positional) != 1
        or args.vararg is not None
        or args.kwarg is not None
        or args.kwonlyargs
        or args.defaults
    ):
        raise _fail("execute_command must take exactly one positional parameter (image)", entry)

    checker = _Checker(tools, _bound_names(tree))
    checker.visit(tree)
    return tree
