"""A tiny, safe expression language for `when:` conditions and rules (no eval/exec).

Grammar:

    expr    := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := operand (("=="|"!="|"<"|"<="|">"|">=") operand | ["not"] "in" list)
             | "(" expr ")"
    operand := NUMBER | STRING | PATH | WORD
    list    := "[" [item ("," item)*] "]"      item := NUMBER | STRING | WORD

A dotted name (`demographics.age`) is an attribute path; a bare word without a dot
(`student`) is a string literal, as is anything quoted ('18-24', "part-time"). An
expression is *applicable* to a persona only when every attribute it names is present;
`when:` on an inapplicable leaf is false and a rule that is not applicable is not checked.

Expressions are parsed once, type-checked against the taxonomy (unknown paths, values that
a categorical attribute does not have, `<` on categories) and compiled into numpy
functions over a batch of personas: categorical values are integer codes, numbers floats,
absent attributes NaN.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false"}
_COMPARE = {"==", "!=", "<", "<=", ">", ">="}


class ExprError(ValueError):
    """A syntax or type error in an expression; the message says where."""


@dataclass(frozen=True)
class Path:
    name: str


@dataclass(frozen=True)
class Literal:
    value: str | float


@dataclass(frozen=True)
class Compare:
    op: str
    left: Path | Literal
    right: Path | Literal


@dataclass(frozen=True)
class In:
    path: Path
    items: tuple[Literal, ...]
    negate: bool


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = Compare | In | BoolOp | Not


def _tokens(text: str) -> list[tuple[str, Any, int]]:
    out: list[tuple[str, Any, int]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExprError(f"unexpected character {text[pos:].lstrip()[:1]!r} at column {pos + 1}")
        col = m.start(m.lastgroup) + 1 if m.lastgroup else pos + 1
        if m.group("num") is not None:
            out.append(("num", float(m.group("num")), col))
        elif m.group("str") is not None:
            raw = m.group("str")[1:-1]
            out.append(("str", re.sub(r"\\(.)", r"\1", raw), col))
        elif m.group("op") is not None:
            out.append(("op", m.group("op"), col))
        else:
            word = m.group("name")
            out.append(("kw" if word in _KEYWORDS else "name", word, col))
        pos = m.end()
    out.append(("end", None, len(text) + 1))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, Any, int]:
        return self.toks[self.i]

    def take(self) -> tuple[str, Any, int]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, kind: str, value: Any = None) -> tuple[str, Any, int]:
        tok = self.take()
        if tok[0] != kind or (value is not None and tok[1] != value):
            want = value if value is not None else kind
            raise ExprError(f"expected {want!r} at column {tok[2]}, found {_show(tok)}")
        return tok

    def parse(self) -> Node:
        node = self.parse_or()
        tok = self.peek()
        if tok[0] != "end":
            raise ExprError(f"unexpected {_show(tok)} at column {tok[2]}")
        return node

    def parse_or(self) -> Node:
        items = [self.parse_and()]
        while self.peek()[:2] == ("kw", "or"):
            self.take()
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def parse_and(self) -> Node:
        items = [self.parse_not()]
        while self.peek()[:2] == ("kw", "and"):
            self.take()
            items.append(self.parse_not())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def parse_not(self) -> Node:
        if self.peek()[:2] == ("kw", "not"):
            self.take()
            return Not(self.parse_not())
        return self.parse_compare()

    def operand(self) -> Path | Literal:
        tok = self.take()
        if tok[0] == "num" or tok[0] == "str":
            return Literal(tok[1])
        if tok[0] == "name":
            return Path(tok[1]) if "." in tok[1] else Literal(tok[1])
        if tok[0] == "kw" and tok[1] in ("true", "false"):
            return Literal(tok[1])
        raise ExprError(
            f"expected a value or attribute path at column {tok[2]}, found {_show(tok)}"
        )

    def parse_compare(self) -> Node:
        if self.peek()[:2] == ("op", "("):
            self.take()
            node = self.parse_or()
            self.expect("op", ")")
            return node
        start = self.peek()
        left = self.operand()
        tok = self.peek()
        if tok[0] == "op" and tok[1] in _COMPARE:
            self.take()
            right = self.operand()
            if not isinstance(left, Path) and not isinstance(right, Path):
                raise ExprError(f"comparison at column {start[2]} names no attribute path")
            return Compare(tok[1], left, right)
        negate = False
        if tok[:2] == ("kw", "not"):
            self.take()
            negate = True
            tok = self.peek()
        if tok[:2] == ("kw", "in"):
            self.take()
            if not isinstance(left, Path):
                raise ExprError(f"'in' at column {tok[2]} needs an attribute path on its left")
            return In(left, self.parse_list(), negate)
        raise ExprError(
            f"expected a comparison (==, !=, <, <=, >, >=, in) at column {tok[2]}, found {_show(tok)}"
        )

    def parse_list(self) -> tuple[Literal, ...]:
        self.expect("op", "[")
        items: list[Literal] = []
        if self.peek()[:2] == ("op", "]"):
            self.take()
            return ()
        while True:
            tok = self.take()
            if tok[0] in ("num", "str") or (tok[0] == "name" and "." not in tok[1]):
                items.append(Literal(tok[1]))
            else:
                raise ExprError(f"expected a list item at column {tok[2]}, found {_show(tok)}")
            sep = self.take()
            if sep[:2] == ("op", "]"):
                return tuple(items)
            if sep[:2] != ("op", ","):
                raise ExprError(f"expected ',' or ']' at column {sep[2]}, found {_show(sep)}")


def _show(tok: tuple[str, Any, int]) -> str:
    return "end of expression" if tok[0] == "end" else repr(tok[1])


def parse(text: str) -> Node:
    """Parse an expression; raises `ExprError`."""
    if not isinstance(text, str) or not text.strip():
        raise ExprError("empty expression")
    return _Parser(text).parse()


def paths(node: Node) -> list[str]:
    """Attribute paths named by the expression, in order of appearance, without repeats."""
    seen: dict[str, None] = {}

    def walk(n: Node | Path | Literal) -> None:
        if isinstance(n, Path):
            seen.setdefault(n.name, None)
        elif isinstance(n, Compare):
            walk(n.left)
            walk(n.right)
        elif isinstance(n, In):
            walk(n.path)
        elif isinstance(n, BoolOp):
            for item in n.items:
                walk(item)
        elif isinstance(n, Not):
            walk(n.item)

    walk(node)
    return list(seen)


@dataclass(frozen=True)
class AttrInfo:
    """What an expression needs to know about an attribute: its column and value set."""

    column: int
    kind: str  # "categorical" | "numeric"
    values: tuple[str, ...] = ()

    def code(self, value: str | float) -> int | None:
        text = _literal_text(value)
        try:
            return self.values.index(text)
        except ValueError:
            return None


def _literal_text(value: str | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def check(node: Node, resolve: Callable[[str], AttrInfo | str]) -> list[str]:
    """Type errors of the expression; `resolve` returns an AttrInfo or an error message."""
    errors: list[str] = []

    def info(p: Path) -> AttrInfo | None:
        got = resolve(p.name)
        if isinstance(got, str):
            errors.append(got)
            return None
        return got

    def literal_ok(attr: AttrInfo, path: str, lit: Literal) -> None:
        if attr.kind == "numeric":
            if not isinstance(lit.value, float):
                errors.append(f"{path} is numeric, compared with the text {lit.value!r}")
        elif attr.code(lit.value) is None:
            shown = ", ".join(attr.values[:12]) + (", ..." if len(attr.values) > 12 else "")
            errors.append(f"{_literal_text(lit.value)!r} is not a value of {path} ({shown})")

    def walk(n: Node) -> None:
        if isinstance(n, BoolOp):
            for item in n.items:
                walk(item)
        elif isinstance(n, Not):
            walk(n.item)
        elif isinstance(n, In):
            attr = info(n.path)
            if attr is not None:
                for lit in n.items:
                    literal_ok(attr, n.path.name, lit)
        elif isinstance(n, Compare):
            sides = [s for s in (n.left, n.right) if isinstance(s, Path)]
            infos = [info(p) for p in sides]
            if any(i is None for i in infos):
                return
            if len(sides) == 2:
                if any(i.kind != "numeric" for i in infos):  # type: ignore[union-attr]
                    errors.append(
                        f"{sides[0].name} {n.op} {sides[1].name}: only numeric attributes "
                        "can be compared with each other"
                    )
                return
            attr = infos[0]
            assert attr is not None
            lit = n.left if isinstance(n.left, Literal) else n.right
            assert isinstance(lit, Literal)
            if attr.kind == "categorical" and n.op not in ("==", "!="):
                errors.append(f"{sides[0].name} is categorical: use == != or in, not {n.op}")
            else:
                literal_ok(attr, sides[0].name, lit)

    walk(node)
    return errors


Rows = slice | np.ndarray
Compiled = Callable[[np.ndarray, Rows], np.ndarray]

_NP_OPS: dict[str, Callable[[Any, Any], np.ndarray]] = {
    "==": np.equal,
    "!=": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}


def compile_batch(node: Node, resolve: Callable[[str], AttrInfo]) -> tuple[Compiled, list[int]]:
    """A function `f(V, rows)` -> bool per selected row of the value matrix V.

    V is personas x columns (categorical codes or numbers, NaN = absent); `rows` selects
    personas (a slice or an index array). The result is and-ed with applicability (every
    named attribute present). Returns the function and the columns it reads. `node` must
    have passed `check`.
    """

    def build(n: Node) -> Compiled:
        if isinstance(n, BoolOp):
            parts = [build(i) for i in n.items]
            if n.op == "and":

                def f_and(V: np.ndarray, rows: Rows) -> np.ndarray:
                    out = parts[0](V, rows)
                    for p in parts[1:]:
                        out &= p(V, rows)
                    return out

                return f_and

            def f_or(V: np.ndarray, rows: Rows) -> np.ndarray:
                out = parts[0](V, rows)
                for p in parts[1:]:
                    out |= p(V, rows)
                return out

            return f_or
        if isinstance(n, Not):
            inner = build(n.item)
            return lambda V, rows: ~inner(V, rows)
        if isinstance(n, In):
            attr = resolve(n.path.name)
            col = attr.column
            if attr.kind == "numeric":
                targets = np.array([float(x.value) for x in n.items], dtype=np.float64)
            else:
                targets = np.array([attr.code(x.value) for x in n.items], dtype=np.float64)
            neg = n.negate
            if len(targets) == 1:
                t0 = targets[0]
                if neg:
                    return lambda V, rows: V[rows, col] != t0
                return lambda V, rows: V[rows, col] == t0
            return lambda V, rows: np.isin(V[rows, col], targets) != neg
        assert isinstance(n, Compare)
        fn = _NP_OPS[n.op]
        if isinstance(n.left, Path) and isinstance(n.right, Path):
            a, b = resolve(n.left.name).column, resolve(n.right.name).column
            return lambda V, rows: fn(V[rows, a], V[rows, b])
        if isinstance(n.left, Path):
            attr, lit, flip = resolve(n.left.name), n.right, False
        else:
            assert isinstance(n.right, Path)
            attr, lit, flip = resolve(n.right.name), n.left, True
        assert isinstance(lit, Literal)
        col = attr.column
        value = float(attr.code(lit.value)) if attr.kind == "categorical" else float(lit.value)  # type: ignore[arg-type]
        if flip:
            return lambda V, rows: fn(value, V[rows, col])
        return lambda V, rows: fn(V[rows, col], value)

    body = build(node)
    columns = sorted({resolve(p).column for p in paths(node)})

    def run(V: np.ndarray, rows: Rows) -> np.ndarray:
        out = body(V, rows)
        for c in columns:
            out &= ~np.isnan(V[rows, c])
        return out

    return run, columns


def evaluate(node: Node, values: Mapping[str, str | float]) -> bool | None:
    """Evaluate on one persona given as {path: value}; None when not applicable."""
    if any(p not in values for p in paths(node)):
        return None

    def val(x: Path | Literal) -> str | float:
        if isinstance(x, Literal):
            return x.value
        return values[x.name]

    def same(a: str | float, b: str | float) -> bool:
        if isinstance(a, str) or isinstance(b, str):
            return _literal_text(a) == _literal_text(b)
        return float(a) == float(b)

    def run(n: Node) -> bool:
        if isinstance(n, BoolOp):
            results = (run(i) for i in n.items)
            return all(results) if n.op == "and" else any(results)
        if isinstance(n, Not):
            return not run(n.item)
        if isinstance(n, In):
            v = val(n.path)
            return any(same(v, item.value) for item in n.items) != n.negate
        a, b = val(n.left), val(n.right)
        if n.op == "==":
            return same(a, b)
        if n.op == "!=":
            return not same(a, b)
        return bool(_NP_OPS[n.op](float(a), float(b)))

    return run(node)
