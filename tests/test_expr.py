"""The safe condition language of --where and --pair-where: semantics and escape routes.

Every mask is checked against the same condition written directly in numpy in the test;
every known way of reaching Python objects from a string is refused before evaluation.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from reprstore.errors import ExpressionError
from reprstore.expr import parse_pair_filter, parse_row_filter

N = 50


@pytest.fixture
def table() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "id": np.arange(N),
        "sid": np.array([f"{i:05d}" for i in range(N)]),
        "region": rng.choice(["north", "south", "Atlantis", "east"], N),
        "score": rng.normal(size=N),
        "label": rng.integers(0, 3, N),
    }


def expected(t: dict[str, np.ndarray], case: str) -> np.ndarray:
    """The same conditions written in plain numpy."""
    r, i, s, lab = t["region"], t["id"], t["score"], t["label"]
    return {
        "a": (r != "Atlantis") & (i >= 10),
        "b": (r == "north") | ((lab == 2) & ~(s > 0)),
        "c": np.isin(r, ["north", "east"]) & (i % 3 == 0),
        "d": ~np.isin(lab, [0, 1]),
        "e": np.array([not v.startswith("A") for v in r]),
        "f": (i * 2 + 1 > 40) & (i / 4 <= 11),
        "g": np.array([v == "00012" for v in t["sid"]]),
        "h": t["sid"].astype(float) >= 45,
        "i": np.array([re.search("^Atl(an|x)tis$", v) is None for v in r]),
        "j": (-s < 0.5) & (abs(s) < 1),
        "k": (i > 3) & (i < 9),
        "l": np.array([len(v) == 5 for v in r]),
    }[case]


CASES = {
    "a": "region != 'Atlantis' and id >= 10",
    "b": "region == 'north' or (label == 2 and not score > 0)",
    "c": "region in ['north', 'east'] and id % 3 == 0",
    "d": "label not in [0, 1]",
    "e": "not startswith(region, 'A')",
    "f": "id * 2 + 1 > 40 and id / 4 <= 11",
    "g": "sid == '00012'",
    "h": "number(sid) >= 45",
    "i": "not matches(region, '^Atl(an|x)tis$')",
    "j": "-score < 0.5 and abs(score) < 1",
    "k": "3 < id < 9",
    "l": "len(region) == 5",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_row_conditions_equal_numpy(table: dict[str, np.ndarray], case: str) -> None:
    mask = parse_row_filter(CASES[case], table.keys()).mask(table)
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, expected(table, case))
    assert expected(table, case).any() and not expected(table, case).all()  # a real test


def test_leading_zero_ids_compare_as_text(table: dict[str, np.ndarray]) -> None:
    mask = parse_row_filter("sid == '00007'").mask(table)
    assert np.flatnonzero(mask).tolist() == [7]
    assert parse_row_filter("sid == '7'").mask(table).sum() == 0


ESCAPES = [
    "__import__('os').system('touch {m}')",
    "@pd.io.common.os.system('touch {m}')",
    "().__class__.__bases__[0].__subclasses__()",
    "region.__class__",
    "region.str.match('x')",
    "open('{m}', 'w').write('x')",
    "exec(\"open('{m}','w')\")",
    "eval('1')",
    "globals()",
    "(lambda: 1)()",
    "[x for x in [1, 2]]",
    "{{'a': 1}}",
    "f'{{region}}'",
    "region[0]",
    "(x := 1)",
    "matches(region, pattern='x')",
    "matches(*['x', 'y'])",
    "id ** 2 > 3",
    "2 ** 99999999",
    "'a' * 10000000000",
    "__builtins__",
    "_secret == 1",
    "getattr(region, 'upper')",
    "type(region)",
    "import os",
    "id == 1; open('{m}', 'w')",
    "b'bytes' == region",
]


@pytest.mark.parametrize("text", ESCAPES)
def test_code_is_never_run(text: str, tmp_path: Path, table: dict[str, np.ndarray]) -> None:
    marker = tmp_path / "marker"
    condition = text.format(m=marker)
    with pytest.raises(ExpressionError) as err:
        parse_row_filter(condition, table.keys()).mask(table)
    assert not marker.exists()
    assert "\n" not in str(err.value)


def test_unknown_column_gets_closest_name(table: dict[str, np.ndarray]) -> None:
    with pytest.raises(ExpressionError, match=r"'regoin'.*Did you mean region"):
        parse_row_filter("regoin == 'x'", table.keys())


def test_a_value_is_not_a_condition(table: dict[str, np.ndarray]) -> None:
    with pytest.raises(ExpressionError, match="true/false"):
        parse_row_filter("score + 1").mask(table)


def test_text_against_number_is_a_clear_error(table: dict[str, np.ndarray]) -> None:
    with pytest.raises(ExpressionError, match="quote the value"):
        parse_row_filter("region > 3").mask(table)


# ----------------------------------------------------------------------- pair filters

RUNS = [
    {"model": m, "seed": s, "layer": "l1", "tasks": t, "step": st}
    for m, t in (("base", "sst2,mnli"), ("ft", "mnli"), ("other", "qqp, cola"))
    for s, st in (("0", 100), ("1", 2000), ("10", 30))
]


def tasks(run: dict) -> set[str]:  # type: ignore[type-arg]
    return set(run["tasks"].replace(" ", "").split(","))


@pytest.mark.parametrize(
    ("text", "oracle"),
    [
        (
            "a.seed != b.seed and not (a.tasks & b.tasks)",
            lambda a, b: a["seed"] != b["seed"] and not (tasks(a) & tasks(b)),
        ),
        (
            "a.model == b.model and a.seed < b.seed",
            lambda a, b: a["model"] == b["model"] and int(a["seed"]) < int(b["seed"]),
        ),
        (
            "'mnli' in a.tasks and 'mnli' not in b.tasks",
            lambda a, b: "mnli" in a["tasks"].split(",") and "mnli" not in b["tasks"].split(","),
        ),
        ("len(a.tasks | b.tasks) >= 3", lambda a, b: len(tasks(a) | tasks(b)) >= 3),
        (
            "a.step < b.step and b.model in ['ft', 'other']",
            lambda a, b: a["step"] < b["step"] and b["model"] in ("ft", "other"),
        ),
        (
            "matches(a.model, '^b') or b.seed == 10",
            lambda a, b: a["model"].startswith("b") or b["seed"] == "10",
        ),
    ],
)
def test_pair_conditions_equal_python(text: str, oracle) -> None:  # type: ignore[no-untyped-def]
    flt = parse_pair_filter(text, RUNS[0].keys())
    kept = [(a, b) for a, b in itertools.product(RUNS, RUNS) if flt(a, b)]
    want = [(a, b) for a, b in itertools.product(RUNS, RUNS) if oracle(a, b)]
    assert kept == want
    assert 0 < len(want) < len(RUNS) ** 2


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a.__class__ == b", "'__class__'"),
        ("a.seed.__class__", "attribute access"),
        ("seed == 1", "a.<key>"),
        ("a.seed != b.seed and os.system('x')", "calling os.system()"),
        ("__import__('os')", "calling __import__()"),
        ("a.colour == 'red'", "'colour'"),
    ],
)
def test_bad_pair_filters_are_refused(text: str, needle: str) -> None:
    with pytest.raises(ExpressionError, match=re.escape(needle)):
        parse_pair_filter(text, RUNS[0].keys())


# ------------------------------------------------------------------ through the CLI


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from reprstore.workflows.ingest import import_files

    tmp = tmp_path_factory.mktemp("expr")
    rng = np.random.default_rng(3)
    (tmp / "meta.csv").write_text(
        "region\n" + "".join(f"{['north', 'south'][i % 2]}\n" for i in range(40))
    )
    for seed in ("0", "1"):
        np.save(tmp / "l1.npy", rng.normal(size=(40, 5)).astype(np.float32))
        import_files(tmp / "s.zarr", [tmp / "l1.npy"], name="m", seed=seed, layer="l1",
                     meta=tmp / "meta.csv")  # fmt: skip
    return tmp / "s.zarr"


@pytest.mark.parametrize(
    "where",
    [
        "@pd.io.common.os.system('touch {m}')",
        "@__builtins__.open('{m}', 'w')",
        "region == @pd.io.common.os.system('touch {m}')",
        "__import__('os').system('touch {m}') == 0",
    ],
)
def test_a_where_string_never_runs_code(small_store: Path, tmp_path: Path, where: str) -> None:
    """pandas.eval ran these (the @ prefix reaches Python objects); now: exit 1, no file."""
    from conftest import assert_user_error, run_cli, store_digest

    marker = tmp_path / "marker"
    before = store_digest(small_store)
    result = run_cli(
        "cka", str(small_store), "--a", "seed=0", "--b", "seed=1",
        "--where", where.format(m=marker),
    )  # fmt: skip
    assert_user_error(result, "--where")
    assert not marker.exists()
    assert store_digest(small_store) == before


def test_where_with_a_regex_through_the_cli(small_store: Path) -> None:
    from conftest import run_cli

    result = run_cli(
        "cka", str(small_store), "--a", "seed=0", "--b", "seed=1",
        "--where", "not matches(region, '^south')",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert " 20 " in result.stdout  # 20 of 40 rows are not 'south'


@pytest.mark.parametrize(
    "pattern", ["(a+)+$!", "(a|aa)*c", "(x+x+)+y", "(.*a){20}", "^(a|a?)+$"]
)  # fmt: skip
def test_catastrophic_patterns_match_in_linear_time(pattern: str) -> None:
    """RE2: patterns that backtrack exponentially in Python's re finish at once, on a long
    subject and on a 24-character one (the review's hang cases)."""
    import time

    table = {"name": np.array(["a" * 24 + "!", "a" * 5000, "x" * 3000 + "!"])}
    start = time.perf_counter()
    parse_row_filter(f"matches(name, '{pattern}')").mask(table)
    parse_row_filter(f"fullmatch(name, '{pattern}')").mask(table)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    "pattern,why",
    [("(a{1,1000}){1,1000}$", "invalid repetition size"), ("^(?!x)", "invalid perl operator"),
     ("(a)\\\\1", "invalid escape"), ("[", "missing ]")],
)  # fmt: skip
def test_unsupported_patterns_are_one_line_errors(pattern: str, why: str) -> None:
    table = {"name": np.array(["a"])}
    with pytest.raises(ExpressionError, match=why) as err:
        parse_row_filter(f"matches(name, '{pattern}')").mask(table)
    assert "RE2" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "text,why",
    [("id * 100000000000000000000000 > 0", "too large"),
     ("lower", "lower is a function"),
     ("id // 0 == 0", "division by zero"),
     ("id % 0 == 1", "division by zero"),
     ("id / 0 > 1", "division by zero"),
     ("-endswith(region, 'h')", "negate a condition with not"),
     ("[[1, 2], [3]] == id", "a list holds single values")],
)  # fmt: skip
def test_the_evaluator_is_total(text: str, why: str) -> None:
    """Inputs the review's fuzzer found: each a one-line ExpressionError naming the cause
    (an integer column divided by zero used to keep every row silently)."""
    table = {"id": np.arange(5), "region": np.array(["north", "south", "east", "west", "x"])}
    with pytest.raises(ExpressionError, match=why):
        parse_row_filter(text).mask(table)


def test_compare_and_describe_take_quiet_and_name_a_missing_label(small_store: Path) -> None:
    from conftest import run_cli

    result = run_cli("compare", str(small_store), "--a", "seed=0", "--b", "seed=1", "--quiet")
    assert result.returncode == 0 and result.stdout == "", result.stderr
    result = run_cli("describe", str(small_store), "--measure", "selectivity")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: selectivity needs the metadata column of the classes: "
        "--measure selectivity:label=COLUMN."
    ]
