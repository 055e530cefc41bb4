"""The tool registry: one declaration per tool drives the prompt API text, the sandbox
namespace, argument validation and the tool table of docs/tools.md."""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from viper_rs.core.errors import ToolError
from viper_rs.core.regions import Region

_EXAMPLE_RE = re.compile(r"^\s*Example:\s*$", re.MULTILINE)
#: Values of :attr:`Tool.describes`.
Describes = Literal["concept", "modifier", "relation"]


@dataclass(frozen=True)
class Tool:
    """A registered tool: the function, its signature and its documentation."""

    name: str
    func: Callable[..., Any]
    signature: inspect.Signature
    hints: dict[str, Any]
    summary: str
    description: str
    example: str
    #: Answer kinds a program returning this tool's result may have, the first being the
    #: kind its result gives (``count`` -> ``("count", "other")``); empty for tools whose
    #: result is no answer by itself (find, the filters, the relations).
    kinds: tuple[str, ...] = ()
    #: Parameters that take a concept phrase (``find(name)``, ``count(target)``): the
    #: detector work a program's literal strings there will ask for.
    concepts: tuple[str, ...] = ()
    #: How an answer names the region list this tool returns: ``"concept"`` (the regions
    #: of its concept argument: find), ``"modifier"`` (its second argument, a word, before
    #: the first argument's name: the size and shape filters), ``"relation"`` (the first
    #: argument's name, the relation's phrase, the second's: the spatial relations), or
    #: None (not named).
    describes: Describes | None = None

    def concept_positions(self) -> tuple[int, ...]:
        """Positions of the :attr:`concepts` parameters in the signature."""
        return tuple(i for i, p in enumerate(self.signature.parameters) if p in self.concepts)

    def signature_text(self) -> str:
        """``name(arg: type = default, ...) -> type`` as shown to programs."""
        params = []
        for p in self.signature.parameters.values():
            text = f"{p.name}: {type_name(self.hints.get(p.name, Any))}"
            if p.default is not inspect.Parameter.empty:
                text += f" = {p.default!r}"
            params.append(text)
        ret = type_name(self.hints.get("return", Any))
        return f"{self.name}({', '.join(params)}) -> {ret}"


class Registry:
    """Ordered collection of tools."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(self, func: Callable[..., Any] | None = None, *, name: str | None = None,
                 kinds: tuple[str, ...] = (), concepts: tuple[str, ...] = (),
                 describes: Describes | None = None):
        """Decorator: declare ``func`` as a tool. Its docstring must contain ``Example:``;
        ``kinds``, ``concepts`` and ``describes`` fill the :class:`Tool` fields of those names."""

        def deco(f: Callable[..., Any]) -> Callable[..., Any]:
            self.add(f, name=name, kinds=kinds, concepts=concepts, describes=describes)
            return f

        return deco(func) if func is not None else deco

    def add(self, func: Callable[..., Any], name: str | None = None,
            kinds: tuple[str, ...] = (), concepts: tuple[str, ...] = (),
            describes: Describes | None = None) -> Tool:
        """Register ``func`` (see :meth:`register`)."""
        tname = name or func.__name__
        if not tname.isidentifier() or tname.startswith("_"):
            raise ValueError(f"bad tool name {tname!r}")
        doc = inspect.getdoc(func) or ""
        if not doc or not _EXAMPLE_RE.search(doc):
            raise ValueError(f"tool {tname!r} needs a docstring with an 'Example:' section")
        body, example = _EXAMPLE_RE.split(doc, maxsplit=1)
        body = body.strip()
        summary = body.splitlines()[0].strip()
        hints = typing.get_type_hints(func)
        sig = inspect.signature(func)
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise ValueError(f"tool {tname!r}: *args/**kwargs are not allowed")
            if p.name not in hints:
                raise ValueError(f"tool {tname!r}: parameter {p.name!r} has no type annotation")
        if "return" not in hints:
            raise ValueError(f"tool {tname!r}: return type annotation missing")
        unknown = [c for c in concepts if c not in sig.parameters]
        if unknown:
            raise ValueError(f"tool {tname!r}: concept parameters {unknown} are not parameters")
        t = Tool(tname, func, sig, hints, summary, body, inspect.cleandoc(example),
                 tuple(kinds), tuple(concepts), describes)
        self._tools[tname] = t
        return t

    def remove(self, name: str) -> None:
        """Unregister a tool (mainly for tests)."""
        self._tools.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

    def names(self) -> list[str]:
        """Tool names, in declaration order (the sandbox namespace)."""
        return list(self._tools)

    def kinds(self) -> dict[str, tuple[str, ...]]:
        """Tool name -> :attr:`Tool.kinds`, for the tools whose result is an answer."""
        return {t.name: t.kinds for t in self if t.kinds}

    # -------------------------------------------------------------- validation
    def bind(self, name: str, args: list | tuple, kwargs: dict) -> inspect.BoundArguments:
        """Check a call against the declared signature and types; raise ToolError if wrong."""
        if name not in self._tools:
            raise ToolError(f"unknown tool {name!r}")
        t = self._tools[name]
        try:
            bound = t.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ToolError(f"{t.signature_text()}: {exc}") from None
        bound.apply_defaults()
        for pname, value in bound.arguments.items():
            hint = t.hints[pname]
            if not check_type(value, hint):
                raise ToolError(
                    f"{name}(): argument {pname!r} must be {type_name(hint)}, "
                    f"got {describe_value(value)}"
                )
        return bound

    def call(self, name: str, args: list | tuple, kwargs: dict) -> Any:
        """Validate and run a tool."""
        bound = self.bind(name, args, kwargs)
        return self._tools[name].func(*bound.args, **bound.kwargs)

    # -------------------------------------------------------------- documents
    def api_text(self) -> str:
        """The API section of the LLM prompt: signatures, descriptions, examples."""
        blocks = []
        for t in self:
            desc = "\n".join("    " + line if line else "" for line in t.description.splitlines())
            ex = "\n".join("        " + line for line in t.example.splitlines())
            blocks.append(f"{t.signature_text()}\n{desc}\n    Example:\n{ex}")
        return "\n\n".join(blocks)

    def docs_table(self) -> str:
        """Markdown table of tools for docs/tools.md."""
        rows = ["| tool | signature | what it does | example |", "|---|---|---|---|"]
        for t in self:
            ex = "<br>".join(f"`{line.strip()}`" for line in t.example.splitlines() if line.strip())
            sig = t.signature_text().replace("|", "\\|")
            rows.append(f"| `{t.name}` | `{sig}` | {t.summary} | {ex} |")
        return "\n".join(rows)


def type_name(hint: Any) -> str:
    """Readable name of a type hint (``list[Region]``, ``str | list[Region]``...)."""
    if hint is Any:
        return "Any"
    if hint is type(None):
        return "None"
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in get_args(hint))
    if origin is Literal:
        return "Literal[" + ", ".join(repr(a) for a in get_args(hint)) + "]"
    if origin is not None:
        args = ", ".join(type_name(a) for a in get_args(hint))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(hint, "__name__", str(hint))


def check_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the hint (the subset of typing used by tool signatures)."""
    if hint is Any:
        return True
    if hint is type(None) or hint is None:
        return value is None
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(check_type(value, a) for a in get_args(hint))
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in get_args(hint))
    if origin in (list, tuple, set, frozenset):
        if not isinstance(value, (list, tuple)):
            return False
        args = get_args(hint)
        if not args:
            return True
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(args) == len(value) and all(
                check_type(v, a) for v, a in zip(value, args, strict=True)
            )
        return all(check_type(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def describe_value(value: Any) -> str:
    """Short description of a value for error messages."""
    if isinstance(value, Region):
        return f"a Region ({value.label})"
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(v).__name__ for v in value})
        return f"a {type(value).__name__} of {', '.join(kinds) or 'nothing'}"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}"


#: The registry of the project's tools (populated by importing ``tools``).
REGISTRY = Registry()
tool = REGISTRY.register
