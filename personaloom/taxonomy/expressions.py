"""A tiny, safe expression language for `when:` conditions and rules (no eval/exec).

Grammar:

    expr    := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum (("=="|"!="|"<"|"<="|">"|">=") sum | ["not"] "in" list)
             | "(" expr ")"
    sum     := term (("+"|"-") term)*          (numbers only)
    term    := atom (("*"|"/") atom)*
    atom    := NUMBER | STRING | PATH | WORD | "-" atom | "(" sum ")"
    list    := "[" [item ("," item)*] "]"      item := NUMBER | STRING | WORD

A dotted name (`demographics.age`) is an attribute path; a bare word without a dot
(`student`) is a string literal, as is anything quoted ('18-24', "part-time"). A
comparison that reads an attribute the persona does not have is *unknown*; `and`, `or` and
`not` follow three-valued logic. A `when:` holds only when definitely true, and a rule is
violated only when definitely violated.

Expressions are parsed once, type-checked against the taxonomy (unknown paths, values that
a categorical attribute does not have, `<` on categories) and compiled into numpy
functions over a batch of personas: categorical values are integer codes, numbers floats,
absent attributes NaN.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,|\+|-|\*|/)
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
class Arith:
    op: str  # + - * /
    left: Value
    right: Value


Value = Path | Literal | Arith


@dataclass(frozen=True)
class Compare:
    op: str
    left: Value
    right: Value


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

    def atom(self) -> Value:
        tok = self.take()
        if tok[0] == "num" or tok[0] == "str":
            return Literal(tok[1])
        if tok[0] == "name":
            return Path(tok[1]) if "." in tok[1] else Literal(tok[1])
        if tok[0] == "kw" and tok[1] in ("true", "false"):
            return Literal(tok[1])
        if tok[:2] == ("op", "-"):
            inner = self.atom()
            if isinstance(inner, Literal) and isinstance(inner.value, float):
                return Literal(-inner.value)
            return Arith("-", Literal(0.0), inner)
        if tok[:2] == ("op", "("):
            inner = self.parse_sum()
            self.expect("op", ")")
            return inner
        raise ExprError(
            f"expected a value or attribute path at column {tok[2]}, found {_show(tok)}"
        )

    def parse_term(self) -> Value:
        left = self.atom()
        while self.peek()[0] == "op" and self.peek()[1] in ("*", "/"):
            op = self.take()[1]
            left = Arith(op, left, self.atom())
        return left

    def parse_sum(self) -> Value:
        left = self.parse_term()
        while self.peek()[0] == "op" and self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            left = Arith(op, left, self.parse_term())
        return left

    def parse_compare(self) -> Node:
        if self.peek()[:2] == ("op", "("):
            saved = self.i
            try:
                self.take()
                node = self.parse_or()
                self.expect("op", ")")
                nxt = self.peek()
                if not (nxt[0] == "op" and nxt[1] in _COMPARE | {"+", "-", "*", "/"}):
                    return node
            except ExprError:
                pass
            self.i = saved  # a parenthesised arithmetic operand, e.g. (a.x + 1) > 2
        start = self.peek()
        left = self.parse_sum()
        tok = self.peek()
        if tok[0] == "op" and tok[1] in _COMPARE:
            self.take()
            right = self.parse_sum()
            if not _has_path(left) and not _has_path(right):
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
    """Parse an expression; raises `ExprError`. Results are cached (nodes are immutable)."""
    if not isinstance(text, str) or not text.strip():
        raise ExprError("empty expression")
    return _parse_cached(text)


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Node:
    return _Parser(text).parse()


def _has_path(v: Value) -> bool:
    if isinstance(v, Path):
        return True
    if isinstance(v, Arith):
        return _has_path(v.left) or _has_path(v.right)
    return False


def paths(node: Node) -> list[str]:
    """Attribute paths named by the expression, in order of appearance, without repeats."""
    seen: dict[str, None] = {}

    def walk(n: Node | Value) -> None:
        if isinstance(n, Path):
            seen.setdefault(n.name, None)
        elif isinstance(n, Arith | Compare):
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


def _show_value(v: Value) -> str:
    if isinstance(v, Path):
        return v.name
    if isinstance(v, Literal):
        return repr(_literal_text(v.value)) if isinstance(v.value, str) else _literal_text(v.value)
    return f"({_show_value(v.left)} {v.op} {_show_value(v.right)})"


def check(node: Node, resolve: Callable[[str], AttrInfo | str]) -> list[str]:
    """Type errors of the expression; `resolve` returns an AttrInfo or an error message."""
    errors: list[str] = []

    def vtype(v: Value) -> tuple[str, AttrInfo | None] | None:
        """("numeric" | "text" | "categorical", info) or None after an error."""
        if isinstance(v, Literal):
            return ("numeric" if isinstance(v.value, float) else "text", None)
        if isinstance(v, Path):
            got = resolve(v.name)
            if isinstance(got, str):
                errors.append(got)
                return None
            return (got.kind, got)
        a, b = vtype(v.left), vtype(v.right)
        if a is None or b is None:
            return None
        for side, t in ((v.left, a), (v.right, b)):
            if t[0] != "numeric":
                hint = (
                    " (quote text containing '-', e.g. 'self-employed')" if t[0] == "text" else ""
                )
                errors.append(f"arithmetic needs numbers: {_show_value(side)} is {t[0]}{hint}")
                return None
        return ("numeric", None)

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
            t = vtype(n.path)
            if t is not None:
                assert t[1] is not None
                for lit in n.items:
                    literal_ok(t[1], n.path.name, lit)
        elif isinstance(n, Compare):
            a, b = vtype(n.left), vtype(n.right)
            if a is None or b is None:
                return
            kinds = {a[0], b[0]}
            if kinds == {"numeric"}:
                return
            if "categorical" in kinds and n.op not in ("==", "!="):
                errors.append(
                    f"{_show_value(n.left)} {n.op} {_show_value(n.right)}: categorical values take == != or in"
                )
                return
            if a[0] == b[0] == "categorical":
                assert a[1] is not None and b[1] is not None
                if a[1].values != b[1].values:
                    errors.append(
                        f"{_show_value(n.left)} {n.op} {_show_value(n.right)}: categorical attributes "
                        "can only be compared when they have the same values"
                    )
                return
            if kinds == {"categorical", "text"} or kinds == {"categorical", "numeric"}:
                cat, lit = (n.left, n.right) if a[0] == "categorical" else (n.right, n.left)
                if isinstance(cat, Path) and isinstance(lit, Literal):
                    info = a[1] if a[0] == "categorical" else b[1]
                    assert info is not None
                    literal_ok(info, cat.name, lit)
                    return
            errors.append(
                f"{_show_value(n.left)} {n.op} {_show_value(n.right)}: compares {a[0]} with {b[0]}"
            )

    walk(node)
    return errors


Rows = slice | np.ndarray
Compiled = Callable[[np.ndarray, Rows], np.ndarray]

_NP_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": np.equal,
    "!=": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.divide,
}


Truth = Callable[[np.ndarray, Rows], tuple[np.ndarray, np.ndarray]]


def compile_truth(node: Node, resolve: Callable[[str], AttrInfo]) -> Truth:
    """A function `f(V, rows)` -> (definitely true, definitely false) per selected row.

    V is personas x columns (categorical codes or numbers, NaN = absent); `rows` selects
    personas (a slice or an index array). A comparison that reads an absent attribute is
    unknown (neither); `and`, `or`, `not` follow three-valued (Kleene) logic, so
    `a.x > 1 or b.y == z` is true when `a.x > 1` even if `b.y` is absent. `node` must have
    passed `check`.
    """

    def value(v: Value, as_code_of: AttrInfo | None = None) -> Callable[[np.ndarray, Rows], Any]:
        if isinstance(v, Path):
            col = resolve(v.name).column
            return lambda V, rows: V[rows, col]
        if isinstance(v, Literal):
            if as_code_of is not None:
                x = float(as_code_of.code(v.value))  # type: ignore[arg-type]
            else:
                x = float(v.value)
            return lambda V, rows: x
        fa, fb, fn = value(v.left), value(v.right), _NP_OPS[v.op]
        return lambda V, rows: fn(fa(V, rows), fb(V, rows))

    def atom(n: Compare | In, cols: list[int]) -> Truth:
        if isinstance(n, In):
            attr = resolve(n.path.name)
            col = attr.column
            if attr.kind == "numeric":
                targets = np.array([float(x.value) for x in n.items], dtype=np.float64)
            else:
                targets = np.array([attr.code(x.value) for x in n.items], dtype=np.float64)
            neg = n.negate

            def test(V: np.ndarray, rows: Rows) -> np.ndarray:
                return np.isin(V[rows, col], targets) != neg

        else:
            fn = _NP_OPS[n.op]
            cat: AttrInfo | None = None
            for side in (n.left, n.right):
                if isinstance(side, Path) and resolve(side.name).kind == "categorical":
                    cat = resolve(side.name)
            fa, fb = value(n.left, cat), value(n.right, cat)

            def test(V: np.ndarray, rows: Rows) -> np.ndarray:
                with np.errstate(invalid="ignore", divide="ignore"):
                    return np.asarray(fn(fa(V, rows), fb(V, rows)), dtype=bool)

        def truth(V: np.ndarray, rows: Rows) -> tuple[np.ndarray, np.ndarray]:
            known = ~np.isnan(V[rows, cols[0]])
            for c in cols[1:]:
                known &= ~np.isnan(V[rows, c])
            t = test(V, rows)
            return t & known, ~t & known

        return truth

    def build(n: Node) -> Truth:
        if isinstance(n, BoolOp):
            parts = [build(i) for i in n.items]
            is_and = n.op == "and"

            def f_bool(V: np.ndarray, rows: Rows) -> tuple[np.ndarray, np.ndarray]:
                t, f = parts[0](V, rows)
                for p in parts[1:]:
                    t2, f2 = p(V, rows)
                    if is_and:
                        t, f = t & t2, f | f2
                    else:
                        t, f = t | t2, f & f2
                return t, f

            return f_bool
        if isinstance(n, Not):
            inner = build(n.item)

            def f_not(V: np.ndarray, rows: Rows) -> tuple[np.ndarray, np.ndarray]:
                t, f = inner(V, rows)
                return f, t

            return f_not
        cols = sorted({resolve(p).column for p in paths(n)})
        return atom(n, cols)

    return build(node)


def compile_batch(node: Node, resolve: Callable[[str], AttrInfo]) -> tuple[Compiled, list[int]]:
    """A function `f(V, rows)` -> bool per row: the expression is *definitely* true.

    See `compile_truth` for the three-valued logic over absent attributes. Returns the
    function and the columns it reads.
    """
    truth = compile_truth(node, resolve)
    columns = sorted({resolve(p).column for p in paths(node)})
    return (lambda V, rows: truth(V, rows)[0]), columns


def evaluate(node: Node, values: Mapping[str, str | float]) -> bool | None:
    """Evaluate on one persona given as {path: value}; None when unknown (three-valued
    logic: a comparison reading an absent attribute is unknown)."""

    def val(x: Value) -> str | float:
        if isinstance(x, Literal):
            return x.value
        if isinstance(x, Path):
            return values[x.name]
        a, b = float(val(x.left)), float(val(x.right))
        if x.op == "/" and b == 0:
            return float("nan")
        return float(_NP_OPS[x.op](a, b))

    def same(a: str | float, b: str | float) -> bool:
        if isinstance(a, str) or isinstance(b, str):
            return _literal_text(a) == _literal_text(b)
        return float(a) == float(b)

    def run(n: Node) -> bool | None:
        if isinstance(n, BoolOp):
            results = [run(i) for i in n.items]
            if n.op == "and":
                if any(r is False for r in results):
                    return False
                return None if any(r is None for r in results) else True
            if any(r is True for r in results):
                return True
            return None if any(r is None for r in results) else False
        if isinstance(n, Not):
            r = run(n.item)
            return None if r is None else not r
        try:
            if isinstance(n, In):
                v = val(n.path)
                return any(same(v, item.value) for item in n.items) != n.negate
            a, b = val(n.left), val(n.right)
        except KeyError:  # an attribute the persona does not have: unknown
            return None
        if n.op == "==":
            return same(a, b)
        if n.op == "!=":
            return not same(a, b)
        return bool(_NP_OPS[n.op](float(a), float(b)))

    return run(node)
