"""The expression language is total (trust-v3): hypothesis generates conditions from its
grammar (deep nesting, huge and odd numbers, lists, sets, every function, regexes) and
plain junk text; each gives a boolean mask / a bool, or one-line ExpressionError. Any
other exception, or a mask of the wrong shape, fails."""

from __future__ import annotations

import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reprstore.errors import ExpressionError
from reprstore.expr import FUNCTIONS, parse_pair_filter, parse_row_filter

N = 7
TABLE = {
    "id": np.arange(N),
    "label": np.array([0, 1, 2, 3, 0, 1, 2]),
    "score": np.array([0.5, -1.0, np.nan, 2.5, 1e308, -0.0, 3.0]),
    "region": np.array(["north", "south", "", "east", "wést", "x,y", "01"]),
}
RUN_A = {"model": "base", "seed": "0", "layer": "l1", "tasks": "sst2,mnli", "step": 100}
RUN_B = {"model": "ft", "seed": "10", "layer": "l2", "tasks": "mnli", "step": None}

NUMBERS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["0", "1", "-1", "0.5", "1e308", "1e-320", "10**20", "9" * 60, "1_000",
                     "0x10", "1j", "2.", ".5", "1e999"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)  # fmt: skip
STRINGS = st.one_of(
    st.text(max_size=8).map(repr),
    st.sampled_from(["'north'", "'(a+)+$'", "'a{99999999999}'", "'(?=x)'", "'\\\\'", "'['",
                     "'01'", "'x,y'", "''", "'a|b'", "'^w'", "'(a|aa)*c'", "'\\\\p{L}+'"]),
)  # fmt: skip
ROW_NAMES = st.sampled_from([*TABLE, "nope", "lower", "True", "None", "__class__"])
PAIR_NAMES = st.sampled_from(["a.model", "b.seed", "a.tasks", "b.step", "a.nope", "a", "b",
                              "a.__class__", "c.model", "b.layer"])  # fmt: skip
BINARY = st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "&", "|", "^", "<<", "@"])
COMPARE = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in", "is", "<>"])


def _expressions(names: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    atoms = st.one_of(names, NUMBERS, STRINGS, st.sampled_from(["True", "False", "None", "[]"]))

    def grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        names = st.sampled_from([*FUNCTIONS, "eval", "open", "print"])
        call = st.tuples(names, st.lists(inner, max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"
        )
        return st.one_of(
            st.tuples(inner, BINARY, inner).map(" ".join),
            st.tuples(inner, COMPARE, inner).map(" ".join),
            st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(" ".join),
            inner.map(lambda e: f"not {e}"),
            inner.map(lambda e: f"-{e}"),
            inner.map(lambda e: f"({e})"),
            st.lists(inner, max_size=3).map(lambda xs: f"[{', '.join(xs)}]"),
            st.lists(inner, max_size=3).map(lambda xs: "{" + ", ".join(xs) + "}"),
            call,
            st.tuples(inner, inner, inner).map(lambda t: f"{t[0]} if {t[1]} else {t[2]}"),
            st.tuples(inner, st.sampled_from(["[0]", ".real", "[::-1]"])).map("".join),
        )

    return st.recursive(atoms, grow, max_leaves=12)


def _deep(kind: str, depth: int) -> str:
    if kind == "parens":
        return "(" * depth + "id" + ")" * depth + " > 1"
    if kind == "not":
        return "not " * depth + "id > 1"
    if kind == "minus":
        return "-" * depth + "id > 1"
    if kind == "lists":
        return "id in " + "[" * depth + "1" + "]" * depth
    return " and ".join(["id > 1"] * depth)


def _one_line(err: ExpressionError) -> None:
    text = str(err)
    assert text and "\n" not in text.strip() and "Unexpected" not in text, text


FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


@FUZZ
@given(st.one_of(_expressions(ROW_NAMES), st.text(max_size=40)))
def test_row_conditions_are_total(text: str) -> None:
    began = time.perf_counter()
    try:
        mask = parse_row_filter(text).mask(TABLE)
    except ExpressionError as err:
        _one_line(err)
    else:
        assert np.asarray(mask).dtype == bool and np.asarray(mask).shape == (N,), (text, mask)
    assert time.perf_counter() - began < 1.0, text


@FUZZ
@given(st.one_of(_expressions(PAIR_NAMES), st.text(max_size=40)))
def test_pair_conditions_are_total(text: str) -> None:
    began = time.perf_counter()
    try:
        keep = parse_pair_filter(text)(RUN_A, RUN_B)
    except ExpressionError as err:
        _one_line(err)
    else:
        assert isinstance(keep, bool), (text, keep)
    assert time.perf_counter() - began < 1.0, text


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.sampled_from(["parens", "not", "minus", "lists", "and"]),
       st.sampled_from([50, 200, 1000, 100_000]))  # fmt: skip
def test_deep_nesting_is_a_value_or_one_line(kind: str, depth: int) -> None:
    """Up to 100,000 levels: no RecursionError, no MemoryError, within a second."""
    began = time.perf_counter()
    try:
        mask = parse_row_filter(_deep(kind, depth)).mask(TABLE)
    except ExpressionError as err:
        _one_line(err)
    else:
        assert np.asarray(mask).shape == (N,)
    assert time.perf_counter() - began < 1.0, (kind, depth)
