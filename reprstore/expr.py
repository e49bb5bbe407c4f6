"""Safe filter expressions: a small parsed grammar that never runs code.

``--where`` filters a dataset's rows by its ``id`` and metadata columns, vectorised over
numpy columns; ``--pair-where`` filters compared pairs by both sides' keys and run
attributes (``a.seed != b.seed and not (a.tasks & b.tasks)``).

An expression is parsed with :func:`ast.parse` (which builds a tree and executes nothing)
and then checked node by node against a whitelist before anything is evaluated:

* literals: numbers, quoted strings, ``True``/``False``/``None``, lists/tuples of literals;
* names: the columns (row filters) or ``a.<key>`` / ``b.<key>`` (pair filters);
* ``and``, ``or``, ``not``; comparisons ``== != < <= > >=``, ``in`` / ``not in``;
* arithmetic ``+ - * / // %`` on numbers; ``& | ^ -`` on sets (pair filters);
* calls of the functions in :data:`FUNCTIONS`, positional arguments only.

Everything else (attribute access, subscripts, lambdas, comprehensions, f-strings, ``**``,
keyword arguments, any other name or call) is refused with a one-line
:class:`~reprstore.errors.ExpressionError` before evaluation starts.

Why not a library: ``pandas.eval`` reaches Python objects through ``@``; simpleeval and
asteval evaluate Python's scalar semantics, where ``and``/``or`` do not vectorise over a
million-row column. The grammar here is small enough to check completely.
"""

from __future__ import annotations

import ast
import difflib
import functools
import operator
import unicodedata
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from reprstore.errors import ExpressionError

MAX_LENGTH = 2000
MAX_NODES = 500
MAX_PATTERN = 500
SIDES = ("a", "b")


def _split_set(value: Any) -> frozenset[str]:
    """A comma-separated attribute (``'sst2, mnli'``) or a set, as a frozenset."""
    if isinstance(value, frozenset):
        return value
    if isinstance(value, (set, list, tuple)):
        return frozenset(str(v) for v in value)
    if value is None:
        return frozenset()
    return frozenset(p.strip() for p in str(value).split(",") if p.strip())


def _regex(pattern: Any) -> Any:
    """``pattern`` compiled by RE2: matching takes time linear in the subject, whatever the
    pattern (Python's backtracking ``re`` ran for minutes on ``(a+)+$!``)."""
    if not isinstance(pattern, str):
        raise ExpressionError(f"A regular expression must be a quoted string. Got {pattern!r}.")
    if len(pattern) > MAX_PATTERN:
        raise ExpressionError(f"Regular expressions are limited to {MAX_PATTERN} characters.")
    return _compiled(pattern)


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> Any:
    import re2

    options = re2.Options()
    options.log_errors = False  # the reason goes into the one-line error, not to stderr
    try:
        return re2.compile(pattern, options)
    except re2.error as err:
        reason = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else err
        raise ExpressionError(
            f"Invalid or unsupported regular expression {pattern!r}: {reason}. Patterns use "
            "RE2 syntax, which matches in linear time: no lookaround, no backreferences, "
            "repetition counts up to 1000 (docs/cli.md)."
        ) from None


def _nfc(text: str) -> str:
    """Text of a pair condition in Unicode NFC: names and their literals compare as one
    spelling (``'café'`` typed decomposed matches a model stored precomposed). Row
    conditions (``--where``) compare dataset values as stored and are not normalised."""
    return unicodedata.normalize("NFC", text)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ExpressionError(f"{str(value)!r} is not a number.") from None


#: name -> (function of scalars, number of arguments, one-line help)
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, str]] = {
    "matches": (
        lambda s, p: _regex(p).search(str(s)) is not None,
        2,
        "matches(x, 'regex'): the regular expression is found in x (anchor with ^ and $)",
    ),
    "fullmatch": (
        lambda s, p: _regex(p).fullmatch(str(s)) is not None,
        2,
        "fullmatch(x, 'regex'): x as a whole matches the regular expression",
    ),
    "startswith": (lambda s, p: str(s).startswith(str(p)), 2, "startswith(x, 'prefix')"),
    "endswith": (lambda s, p: str(s).endswith(str(p)), 2, "endswith(x, 'suffix')"),
    "contains": (lambda s, p: str(p) in str(s), 2, "contains(x, 'text'): substring test"),
    "lower": (lambda s: str(s).lower(), 1, "lower(x)"),
    "upper": (lambda s: str(s).upper(), 1, "upper(x)"),
    "len": (
        lambda s: len(s) if isinstance(s, frozenset) else len(str(s)),
        1,
        "len(x): characters of a string, members of a set",
    ),
    "abs": (lambda x: abs(_number(x)), 1, "abs(x)"),
    "number": (_number, 1, "number(x): text such as '01234' as the number 1234"),
    "str": (lambda x: "" if x is None else str(x), 1, "str(x): a number as text"),
    "set": (_split_set, 1, "set(x): 'a,b,c' as the set {a, b, c} (pair filters)"),
}

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_ORDERING = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_ARITH: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_SETOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {  # on sets
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
    ast.Sub: operator.sub,
}

GRAMMAR = (
    "Allowed: names of columns, quoted strings, numbers, and/or/not, == != < <= > >=, "
    "in [...], + - * / % and the functions " + ", ".join(f"{f}()" for f in FUNCTIONS) + "."
)


def _closest(name: str, known: Collection[str]) -> str:
    near = difflib.get_close_matches(name, list(known), n=3)
    return f" Did you mean {', '.join(near)}?" if near else ""


@dataclass(frozen=True)
class _Checked:
    """A parsed, whitelisted expression and the names it uses."""

    text: str
    option: str
    tree: ast.Expression
    names: frozenset[str]


def _parse(text: str, option: str, pairs: bool) -> _Checked:
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(f"{option} is empty: give a condition such as \"region != 'x'\".")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"{option} is longer than {MAX_LENGTH} characters.")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        detail = getattr(err, "msg", None) or type(err).__name__
        raise ExpressionError(
            f"Invalid {option} {text!r}: not a condition ({detail}). {GRAMMAR}"
        ) from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise ExpressionError(f"{option} is too complex (over {MAX_NODES} parts).")
    names: set[str] = set()
    for node in nodes:
        _check_node(node, text, option, pairs, names)
    return _Checked(text, option, tree, frozenset(names))


def _refuse(text: str, option: str, what: str) -> ExpressionError:
    return ExpressionError(f"Invalid {option} {text!r}: {what} is not allowed. {GRAMMAR}")


def _check_node(node: ast.AST, text: str, option: str, pairs: bool, names: set[str]) -> None:
    """Raise unless ``node`` belongs to the grammar; collect the names it reads."""
    allowed: tuple[type[ast.AST], ...] = (
        ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub,
        ast.UAdd, ast.BinOp, ast.Compare, ast.In, ast.NotIn, ast.Constant, ast.List,
        ast.Tuple, ast.Load, *_COMPARE, *_ARITH, *_SETOPS,
    )  # fmt: skip
    if isinstance(node, ast.Attribute):
        if not (pairs and isinstance(node.value, ast.Name) and node.value.id in SIDES):
            raise _refuse(text, option, f"attribute access ('.{node.attr}')")
        if node.attr.startswith("_"):
            raise _refuse(text, option, f"the name '{node.attr}'")
        names.add(node.attr)
        return
    if isinstance(node, ast.Name):
        if pairs and node.id not in SIDES and node.id not in FUNCTIONS:
            raise ExpressionError(
                f"Invalid {option} {text!r}: unknown name {node.id!r}; write a.<key> or "
                "b.<key> (e.g. a.seed != b.seed)."
            )
        if node.id.startswith("_"):
            raise _refuse(text, option, f"the name '{node.id}'")
        if not pairs and node.id not in FUNCTIONS:
            names.add(node.id)
        return
    if isinstance(node, ast.Call):
        func = node.func
        if not isinstance(func, ast.Name) or func.id not in FUNCTIONS:
            shown = func.id if isinstance(func, ast.Name) else ast.unparse(func)
            raise _refuse(text, option, f"calling {shown}()")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise _refuse(text, option, "a keyword or * argument")
        arity = FUNCTIONS[func.id][1]
        if len(node.args) != arity:
            raise ExpressionError(
                f"Invalid {option} {text!r}: {func.id}() takes {arity} argument(s): "
                f"{FUNCTIONS[func.id][2]}."
            )
        return
    if isinstance(node, ast.Constant) and not isinstance(
        node.value, (str, int, float, bool, type(None))
    ):
        raise _refuse(text, option, f"the literal {node.value!r}")
    if isinstance(node, ast.BinOp) and not pairs and type(node.op) in set(_SETOPS) - {ast.Sub}:
        raise _refuse(text, option, "the operator & | ^ (use and / or)")
    if not isinstance(node, allowed):
        what = {
            ast.Pow: "'**'",
            ast.Subscript: "indexing with [...]",
            ast.Lambda: "lambda",
            ast.JoinedStr: "an f-string",
            ast.NamedExpr: "':='",
        }.get(type(node), type(node).__name__)
        raise _refuse(text, option, what)


# ------------------------------------------------------------------------- evaluation


def _as_numbers(values: Any, option: str) -> Any:
    """A text column or value as numbers, or a clear error."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "fiub":
            return values
        try:
            return values.astype(np.float64)
        except ValueError:
            raise ExpressionError(
                f"{option}: a text column is compared with a number; quote the value "
                "('abc'), or use number(column) for numeric text."
            ) from None
    if isinstance(values, (int, float, bool)):
        return values
    return _number(values)


def _is_text(v: Any) -> bool:
    if isinstance(v, np.ndarray):
        return v.dtype.kind in "UOST"
    return isinstance(v, str)


def _is_number(v: Any) -> bool:
    if isinstance(v, np.ndarray):
        return v.dtype.kind in "fiub"
    return isinstance(v, (int, float, bool)) and not isinstance(v, str)


def _elementwise(fn: Callable[..., Any], *args: Any) -> Any:
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    if not arrays:
        return fn(*args)
    n = len(arrays[0])
    cols = [a if isinstance(a, np.ndarray) else [a] * n for a in args]
    out = [fn(*row) for row in zip(*cols, strict=True)]
    return np.asarray(out) if out else np.zeros(0, dtype=bool)


def _truth(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        if v.dtype != bool:
            raise ExpressionError("and/or/not need conditions (true/false), not values.")
        return v
    return bool(v)


class _Evaluator:
    def __init__(self, checked: _Checked, lookup: Callable[[ast.AST], Any], pairs: bool):
        self.checked = checked
        self.lookup = lookup
        self.pairs = pairs

    def __call__(self, node: ast.AST) -> Any:
        method = getattr(self, f"_{type(node).__name__}")
        return method(node)

    def _Expression(self, node: ast.Expression) -> Any:
        return self(node.body)

    def _Constant(self, node: ast.Constant) -> Any:
        if self.pairs and isinstance(node.value, str):
            return _nfc(node.value)  # names compare in NFC (see _nfc)
        return node.value

    def _List(self, node: ast.List | ast.Tuple) -> Any:
        items = [self(e) for e in node.elts]
        if any(isinstance(v, (list, np.ndarray, frozenset)) for v in items):
            raise ExpressionError(
                f"{self.checked.option}: a list holds single values (strings or numbers), "
                "not lists or columns."
            )
        return items

    _Tuple = _List

    def _Name(self, node: ast.Name) -> Any:
        return self.lookup(node)

    def _Attribute(self, node: ast.Attribute) -> Any:
        return self.lookup(node)

    def _BoolOp(self, node: ast.BoolOp) -> Any:
        values = [_truth(self(v)) for v in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        out = values[0]
        for v in values[1:]:
            out = combine(out, v)
        return out if isinstance(out, np.ndarray) else bool(out)

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        value = self(node.operand)
        if isinstance(node.op, ast.Not):
            if isinstance(value, frozenset):
                return not value
            v = _truth(value)
            return np.logical_not(v) if isinstance(v, np.ndarray) else not v
        number = _as_numbers(value, self.checked.option)
        if np.asarray(number).dtype == bool:
            raise ExpressionError(
                f"{self.checked.option}: '-' and '+' apply to numbers, not to a condition; "
                "negate a condition with not."
            )
        return -number if isinstance(node.op, ast.USub) else +number

    def _BinOp(self, node: ast.BinOp) -> Any:
        left, right = self(node.left), self(node.right)
        op = type(node.op)
        if (
            self.pairs
            and op in _SETOPS
            and (op is not ast.Sub or not (_is_number(left) and _is_number(right)))
        ):
            if op is ast.Sub and _numeric_text(left) and _numeric_text(right):
                return _number(left) - _number(right)
            return _SETOPS[op](_split_set(left), _split_set(right))
        if op is ast.Add and _is_text(left) and _is_text(right):
            return _elementwise(lambda x, y: str(x) + str(y), left, right)
        opt = self.checked.option
        lhs, rhs = _as_numbers(left, opt), _as_numbers(right, opt)
        if op in (ast.Div, ast.FloorDiv, ast.Mod) and np.any(np.asarray(rhs) == 0):
            raise ExpressionError(f"{opt}: division by zero.")  # arrays too, not 0 or inf
        try:
            with np.errstate(all="ignore"):
                return _ARITH[op](lhs, rhs)
        except ZeroDivisionError:
            raise ExpressionError(f"{opt}: division by zero.") from None
        except OverflowError:
            raise ExpressionError(f"{opt}: a number is too large.") from None

    def _Compare(self, node: ast.Compare) -> Any:
        result: Any = True
        left = self(node.left)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self(right_node)
            result = np.logical_and(result, self._compare_one(op, left, right))
            left = right
        return result if isinstance(result, np.ndarray) else bool(result)

    def _compare_one(self, op: ast.cmpop, left: Any, right: Any) -> Any:
        if isinstance(op, (ast.In, ast.NotIn)):
            found = self._membership(left, right)
            if isinstance(op, ast.NotIn):
                return np.logical_not(found) if isinstance(found, np.ndarray) else not found
            return found
        fn = _COMPARE[type(op)]
        if isinstance(left, frozenset) or isinstance(right, frozenset):
            return fn(_split_set(left), _split_set(right))
        mixed = _is_text(left) != _is_text(right) and (_is_number(left) or _is_number(right))
        both_numeric_text = (
            isinstance(op, _ORDERING) and _numeric_text(left) and _numeric_text(right)
        )
        if mixed or both_numeric_text:
            left = _as_numbers(left, self.checked.option)
            right = _as_numbers(right, self.checked.option)
        if isinstance(op, _ORDERING) and (left is None or right is None):
            return False
        try:
            return fn(left, right)
        except TypeError:
            raise ExpressionError(
                f"{self.checked.option}: cannot compare {left!r} with {right!r}."
            ) from None

    def _membership(self, item: Any, container: Any) -> Any:
        if isinstance(container, list):
            if isinstance(item, np.ndarray):
                options = np.asarray(container)
                if _is_number(item) and options.dtype.kind in "UOS":
                    return np.isin(item.astype(str), options)
                if _is_text(item):
                    return np.isin(item, options.astype(str))
                return np.isin(item, options)
            return item in container
        members = _split_set(container)
        if isinstance(item, np.ndarray):
            return np.isin(item.astype(str), list(members))
        if isinstance(item, frozenset):
            return item <= members
        return str(item) in members

    def _Call(self, node: ast.Call) -> Any:
        assert isinstance(node.func, ast.Name)
        fn = FUNCTIONS[node.func.id][0]
        try:
            return _elementwise(fn, *(self(a) for a in node.args))
        except ExpressionError as err:
            option = self.checked.option
            text = str(err)
            message = text if text.startswith(option) else f"{option}: {text}"
            raise ExpressionError(message) from None


def _numeric_text(v: Any) -> bool:
    if _is_number(v):
        return True
    if isinstance(v, str):
        try:
            float(v)
        except ValueError:
            return False
        return True
    return False


# ------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class _Filter:
    """A checked condition: its text and the names it reads."""

    checked: _Checked

    @property
    def text(self) -> str:
        return self.checked.text

    @property
    def names(self) -> frozenset[str]:
        """The columns (row filters) or keys and attributes (pair filters) it reads."""
        return self.checked.names

    def require(self, known: Collection[str], reads: str, nowhere: str, listing: str) -> None:
        """Raise if the condition reads a name outside ``known``, with the closest ones."""
        missing = sorted(self.names - set(known) - {"true", "false"})
        if missing:
            raise ExpressionError(
                f"{self.checked.option} {self.text!r} {reads} {missing[0]!r}, {nowhere}."
                f"{_closest(missing[0], known)} {listing}: {', '.join(sorted(known))}."
            )


def _total(evaluate: Callable[[], Any], option: str, text: str) -> Any:
    """Run an evaluation so that every input gives a value or a one-line error naming the
    cause: a clash the checks above did not foresee (types, sizes, numbers beyond range)
    becomes an :class:`ExpressionError`, never an unexpected one."""
    try:
        return evaluate()
    except ExpressionError:
        raise
    except (TypeError, ValueError, OverflowError, KeyError, IndexError, RecursionError,
            MemoryError, FloatingPointError) as err:  # fmt: skip
        reason = str(err).split("\n")[0][:200] or type(err).__name__
        raise ExpressionError(f"{option} {text!r} cannot be evaluated: {reason}.") from None


@dataclass(frozen=True)
class RowFilter(_Filter):
    """A checked ``--where`` condition over a dataset's ``id`` and metadata columns."""

    def check_columns(self, columns: Collection[str]) -> None:
        """Raise if the condition reads a column the dataset does not have."""
        self.require(columns, "names the column", "which the dataset does not have", "Columns")

    def mask(self, table: Mapping[str, np.ndarray]) -> np.ndarray:
        """The rows kept: bool ndarray ``(n,)`` for columns of length n.

        Raises
        ------
        ExpressionError
            An unknown column, a type clash, or a result that is not one true/false per row.
        """
        option = self.checked.option
        self.check_columns(list(table))
        n = len(next(iter(table.values()))) if table else 0
        columns = {k: np.asarray(v) for k, v in table.items()}

        def lookup(node: ast.AST) -> Any:
            assert isinstance(node, ast.Name)
            if node.id in ("true", "false"):
                return node.id == "true"
            if node.id not in columns and node.id in FUNCTIONS:
                raise ExpressionError(
                    f"{option} {self.text!r}: {node.id} is a function; call it, e.g. "
                    f"{FUNCTIONS[node.id][2].split(':')[0]}."
                )
            return columns[node.id]

        out = _total(lambda: _Evaluator(self.checked, lookup, pairs=False)(self.checked.tree),
                     option, self.text)  # fmt: skip
        if isinstance(out, (bool, np.bool_)):
            return np.full(n, bool(out))
        out = np.asarray(out)
        if out.dtype != bool or out.shape != (n,):
            raise ExpressionError(
                f"{option} {self.text!r} must give one true/false value per row (a condition "
                "such as \"region != 'north' and id >= 10\"), not a value."
            )
        return out


@dataclass(frozen=True)
class PairFilter(_Filter):
    """A checked ``--pair-where`` condition over ``a.<key>`` and ``b.<key>``."""

    def check_keys(self, keys: Collection[str]) -> None:
        """Raise if the condition reads a key that no representation has."""
        self.require(keys, "reads", "which no representation has", "Keys and attributes")

    def __call__(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
        sides = {"a": a, "b": b}

        def lookup(node: ast.AST) -> Any:
            if isinstance(node, ast.Name):  # a bare side or a function name used as a value
                raise ExpressionError(
                    f"{self.checked.option} {self.text!r}: write a.<key> or b.<key>, "
                    f"not {node.id!r} alone."
                )
            assert isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            value = sides[node.value.id].get(node.attr)
            return _nfc(value) if isinstance(value, str) else value

        out = _total(lambda: _Evaluator(self.checked, lookup, pairs=True)(self.checked.tree),
                     self.checked.option, self.text)  # fmt: skip
        if isinstance(out, np.ndarray):
            raise ExpressionError(f"{self.checked.option} {self.text!r} is not a condition.")
        return bool(out)


def parse_row_filter(
    text: str, columns: Collection[str] | None = None, option: str = "--where"
) -> RowFilter:
    """Check a row condition once; with ``columns``, also that it reads only those."""
    flt = RowFilter(_parse(text, option, pairs=False))
    if columns is not None:
        flt.check_columns(columns)
    return flt


def parse_pair_filter(
    text: str, keys: Collection[str] | None = None, option: str = "--pair-where"
) -> PairFilter:
    """Check a pair condition once; with ``keys``, also that it reads only those."""
    flt = PairFilter(_parse(text, option, pairs=True))
    if keys is not None:
        flt.check_keys(keys)
    return flt
