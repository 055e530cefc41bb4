"""Static validation of untrusted programs (layer 1 of the sandbox)."""

from __future__ import annotations

import ast
import textwrap

import pytest

from viper_rs.core.errors import ValidationError
from viper_rs.sandbox import ALLOWED_BUILTINS, validate_program
from viper_rs.sandbox.validate import DENIED_ATTRIBUTES, FORBIDDEN_NAMES
from viper_rs.sandbox.worker import SAFE_BUILTIN_NAMES

TOOLS = ["find", "exists", "count", "area", "compare", "filter_size", "left_of", "next_to"]


def ok(source: str) -> ast.Module:
    return validate_program(textwrap.dedent(source), TOOLS)


def bad(source: str, match: str) -> ValidationError:
    with pytest.raises(ValidationError, match=match) as info:
        validate_program(textwrap.dedent(source), TOOLS)
    return info.value


ALLOWED = {
    "simple_count": """
        def execute_command(image):
            return count("building")
    """,
    "docstring_and_constants": '''
        """Answer a question."""
        SMALL_M2 = 50.0
        NAMES = ("building", "road")
        LIMITS = {"small": 10 * 10, "large": -1}

        def execute_command(image):
            return [count(n) for n in NAMES] + [SMALL_M2, LIMITS["small"]]
    ''',
    "comprehensions": """
        def execute_command(image):
            rs = find("building")
            areas = [r.area_m2 for r in rs if r.area_m2 > 10]
            ids = {r.id for r in rs}
            by_id = {r.id: r.label for r in rs}
            return sum(a for a in areas), len(ids), by_id
    """,
    "lambda_in_sorted_key": """
        def execute_command(image):
            rs = sorted(find("building"), key=lambda r: (r.area_m2, r.id), reverse=True)
            return rs[0] if rs else None
    """,
    "fstrings": """
        def execute_command(image):
            n = count("building")
            return f"{n} buildings, {image.width!r}x{image.height:>5} {n=}"
    """,
    "while_loop_and_augassign": """
        def execute_command(image):
            i = 0
            total = 0
            while i < 10:
                i += 1
                if i % 2:
                    continue
                total += i
                if total > 100:
                    break
            return total
    """,
    "helper_functions_and_closures": """
        def biggest(regions):
            return max(regions, key=lambda r: r.area_m2, default=None)

        def execute_command(image):
            def scaled(k):
                def inner(x):
                    return x * k
                return inner
            big = biggest(find("pond"))
            return scaled(2)(big.area_m2) if big else 0
    """,
    "kwargs_and_star_args": """
        def execute_command(image):
            args = [find("building"), find("road")]
            opts = {"op": "more"}
            first, *rest = args
            return left_of(*args), compare(first, rest[0], **opts), filter_size(first, size="small")
    """,
    "slices_subscripts_ifexp_boolops": """
        def execute_command(image):
            rs = find("tree")
            d = {}
            d["n"] = len(rs)
            xs = list(range(10))[::2][1:-1]
            return d["n"] > 0 and not exists("water") or xs[0] if rs else None
    """,
    "walrus_assert_annotations": """
        def execute_command(image) -> int:
            assert image.width > 0
            n: int = count("car")
            if (m := n * 2) > 3:
                return m
            return n
    """,
    "builtins": """
        def execute_command(image):
            xs = [abs(-1), round(2.5), divmod(7, 2), min(1, 2), float("1.5"), int("3")]
            ok = all(map(bool, xs)) and any(filter(None, xs)) and isinstance(xs, list)
            pairs = list(zip(reversed(xs), enumerate(xs)))
            print(len(pairs), str(ok), tuple(set(frozenset([1]))), dict(a=1))
            return sorted([3, 1])
    """,
    "positional_only_entry": """
        def execute_command(image, /):
            return None
    """,
    "unused_pass_and_nested_def": """
        def execute_command(image):
            def helper():
                pass
            for i in range(3):
                pass
            return helper()
    """,
}


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_allowed_programs(name: str) -> None:
    tree = ok(ALLOWED[name])
    assert isinstance(tree, ast.Module)


REJECTED = [
    ("import_stmt", "import os\ndef execute_command(image):\n    return 1", r"line 1: import"),
    (
        "import_in_function",
        "def execute_command(image):\n    import os\n    return 1",
        r"line 2: import",
    ),
    (
        "from_import",
        "def execute_command(image):\n    from os import path\n    return 1",
        r"line 2: import",
    ),
    (
        "dunder_import",
        "def execute_command(image):\n    return __import__('os')",
        r"line 2: name '__import__'",
    ),
    (
        "dunder_attribute",
        "def execute_command(image):\n    return ().__class__",
        r"attribute '__class__'",
    ),
    (
        "underscore_name",
        "def execute_command(image):\n    _x = 1\n    return _x",
        r"line 2: name '_x' starts with '_'",
    ),
    (
        "underscore_param",
        "def execute_command(image):\n    f = lambda _a: 1\n    return f(1)",
        r"parameter '_a'",
    ),
    (
        "underscore_keyword",
        "def execute_command(image):\n    return dict(__class__=1)",
        r"keyword argument '__class__'",
    ),
    (
        "getattr",
        "def execute_command(image):\n    return getattr(image, 'width')",
        r"name 'getattr' is not allowed",
    ),
    (
        "getattr_referenced",
        "def execute_command(image):\n    g = getattr\n    return 1",
        r"name 'getattr' is not allowed",
    ),
    (
        "str_format",
        "def execute_command(image):\n    return '{0}'.format(1)",
        r"attribute 'format'",
    ),
    (
        "format_map",
        "def execute_command(image):\n    return '{x}'.format_map({'x': 1})",
        r"attribute 'format_map'",
    ),
    ("format_builtin", "def execute_command(image):\n    return format(1, 'x')", r"name 'format'"),
    (
        "gi_frame",
        "def execute_command(image):\n    g = (x for x in [])\n    return g.gi_frame",
        r"line 3: attribute 'gi_frame'",
    ),
    ("f_back", "def execute_command(image):\n    return image.f_back", r"attribute 'f_back'"),
    (
        "cell_contents",
        "def execute_command(image):\n    return image.cell_contents",
        r"attribute 'cell_contents'",
    ),
    ("mro", "def execute_command(image):\n    return int.mro()", r"attribute 'mro'"),
    ("encode", "def execute_command(image):\n    return 'x'.encode('idna')", r"attribute 'encode'"),
    ("type", "def execute_command(image):\n    return type(1)", r"name 'type'"),
    ("object", "def execute_command(image):\n    return object", r"name 'object'"),
    ("eval", "def execute_command(image):\n    return eval('1')", r"name 'eval'"),
    ("open", "def execute_command(image):\n    return open('/etc/passwd')", r"name 'open'"),
    (
        "class",
        "class A:\n    pass\ndef execute_command(image):\n    return 1",
        r"class definitions",
    ),
    (
        "nested_class",
        "def execute_command(image):\n    class A:\n        pass\n    return 1",
        r"line 2: class definitions",
    ),
    (
        "try",
        "def execute_command(image):\n    try:\n        return 1\n    except Exception:\n"
        "        return 0",
        r"line 2: try/except",
    ),
    ("raise", "def execute_command(image):\n    raise ValueError('x')", r"line 2: raise"),
    ("with", "def execute_command(image):\n    with image:\n        return 1", r"with statements"),
    ("delete", "def execute_command(image):\n    x = 1\n    del x\n    return 1", r"del"),
    ("global", "def execute_command(image):\n    global X\n    return 1", r"global"),
    (
        "nonlocal",
        "def execute_command(image):\n    x = 1\n    def f():\n        nonlocal x\n    return 1",
        r"nonlocal",
    ),
    ("yield", "def execute_command(image):\n    yield 1", r"yield"),
    ("async_def", "async def execute_command(image):\n    return 1", r"async functions"),
    ("await", "def execute_command(image):\n    return [await x for x in []]", r"await"),
    (
        "async_comprehension",
        "def execute_command(image):\n    return [x async for x in image]",
        r"async comprehensions",
    ),
    (
        "decorator",
        "def deco(f):\n    return f\n@deco\ndef execute_command(image):\n    return 1",
        r"decorators",
    ),
    (
        "assign_builtin",
        "def execute_command(image):\n    len = 5\n    return len",
        r"line 2: cannot assign to builtin name 'len'",
    ),
    (
        "assign_tool",
        "def execute_command(image):\n    count = lambda x: 0\n    return count('a')",
        r"cannot assign to tool name 'count'",
    ),
    (
        "tool_as_param",
        "def execute_command(image):\n    f = lambda find: find\n    return f(1)",
        r"cannot assign to tool name 'find'",
    ),
    (
        "def_shadows_builtin",
        "def sorted(x):\n    return x\ndef execute_command(image):\n    return 1",
        r"cannot assign to builtin name 'sorted'",
    ),
    (
        "attribute_assignment",
        "def execute_command(image):\n    image.width = 1\n    return 1",
        r"assignment to attribute 'width'",
    ),
    (
        "unknown_name",
        "def execute_command(image):\n    return segment('x')",
        r"unknown name 'segment'",
    ),
    (
        "module_level_call",
        "X = count('a')\ndef execute_command(image):\n    return X",
        r"line 1: only function definitions",
    ),
    (
        "module_level_loop",
        "for i in range(3):\n    pass\ndef execute_command(image):\n    return 1",
        r"only function definitions",
    ),
    (
        "match",
        "def execute_command(image):\n    match image:\n        case _:\n            return 1",
        r"match",
    ),
    ("missing_entry", "def main(image):\n    return 1", r"must define a function 'execute_command"),
    ("entry_no_params", "def execute_command():\n    return 1", r"exactly one positional"),
    ("entry_two_params", "def execute_command(image, x):\n    return 1", r"exactly one positional"),
    ("entry_varargs", "def execute_command(*images):\n    return 1", r"exactly one positional"),
    ("entry_default", "def execute_command(image=None):\n    return 1", r"exactly one positional"),
    ("entry_kwonly", "def execute_command(image, *, k):\n    return 1", r"exactly one positional"),
    ("syntax_error", "def execute_command(image)\n    return 1", r"line 1: syntax error"),
    ("empty", "   \n", r"empty"),
    ("null_bytes", "def execute_command(image):\n    return '\x00'", r"null bytes"),
    ("lone_surrogate", "def execute_command(image):\n    return '\ud800'", r"surrogates"),
    ("too_long", "def execute_command(image):\n    return 1\n" + "#" * 20_000, r"too long"),
    (
        "deep_parens",
        "def execute_command(image):\n    return " + "(" * 5000 + "1" + ")" * 5000,
        r"nested|syntax",
    ),
    (
        "deep_unary",
        "def execute_command(image):\n    return " + "-" * 10_000 + "1",
        r"nested too deeply",
    ),
    (
        "deep_binop",
        "def execute_command(image):\n    return " + "1+" * 3000 + "1",
        r"nested too deeply",
    ),
    (
        "deep_lists",
        "def execute_command(image):\n    return " + "[" * 150 + "]" * 150,
        r"nested too deeply",
    ),
    (
        "huge_int_literal",
        "def execute_command(image):\n    return " + "9" * 5000,
        r"could not be parsed|syntax",
    ),
    (
        "annotation_dunder",
        "def execute_command(image: image.__class__):\n    return 1",
        r"attribute '__class__'",
    ),
    (
        "fstring_dunder",
        "def execute_command(image):\n    return f'{image.__class__}'",
        r"attribute '__class__'",
    ),
    (
        "lambda_default_trick",
        "def execute_command(image):\n    f = lambda g=globals: g()\n    return f()",
        r"name 'globals'",
    ),
    (
        "starred_attribute_target",
        "def execute_command(image):\n    a, *image.x = [1, 2]\n    return a",
        r"starred assignment|assignment to attribute",
    ),
]


@pytest.mark.parametrize(
    ("source", "match"), [(s, m) for _, s, m in REJECTED], ids=[n for n, _, _ in REJECTED]
)
def test_rejected_programs(source: str, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        validate_program(source, TOOLS)


def test_bytes_source_must_be_utf8() -> None:
    with pytest.raises(ValidationError, match="UTF-8"):
        validate_program(b"def execute_command(image):\n    return '\xff'", TOOLS)  # type: ignore[arg-type]
    tree = validate_program(b"def execute_command(image):\n    return 1", TOOLS)  # type: ignore[arg-type]
    assert isinstance(tree, ast.Module)


def test_non_string_source() -> None:
    with pytest.raises(ValidationError, match="must be a string"):
        validate_program(None, TOOLS)  # type: ignore[arg-type]


def test_source_limit_is_configurable() -> None:
    src = "def execute_command(image):\n    return 1\n"
    with pytest.raises(ValidationError, match="too long"):
        validate_program(src, TOOLS, max_source_chars=10)
    validate_program(src, TOOLS, max_source_chars=len(src))


def test_error_is_typed_and_serialisable() -> None:
    err = bad("def execute_command(image):\n    return eval('1')", "eval")
    assert err.type == "validation"
    assert err.to_dict()["type"] == "validation"
    assert "line 2" in err.to_dict()["message"]


def test_tool_names_are_extensible() -> None:
    src = "def execute_command(image):\n    return segment_anything('x')"
    with pytest.raises(ValidationError, match="unknown name"):
        validate_program(src, TOOLS)
    validate_program(src, [*TOOLS, "segment_anything"])


def test_invalid_tool_name() -> None:
    with pytest.raises(ValidationError, match="invalid tool name"):
        validate_program("def execute_command(image):\n    return 1", ["__import__"])


def test_builtin_lists_agree() -> None:
    """The validator and the worker offer exactly the same builtins."""
    assert set(SAFE_BUILTIN_NAMES) | {"print"} == set(ALLOWED_BUILTINS)
    assert not (ALLOWED_BUILTINS & FORBIDDEN_NAMES)


@pytest.mark.parametrize("attr", sorted(DENIED_ATTRIBUTES))
def test_every_denied_attribute_is_rejected(attr: str) -> None:
    with pytest.raises(ValidationError, match="attribute"):
        validate_program(f"def execute_command(image):\n    return image.{attr}", TOOLS)


@pytest.mark.parametrize("name", sorted(n for n in FORBIDDEN_NAMES if not n.startswith("_")))
def test_every_forbidden_name_is_rejected(name: str) -> None:
    with pytest.raises(ValidationError, match="not allowed"):
        validate_program(f"def execute_command(image):\n    x = {name}\n    return 1", TOOLS)
