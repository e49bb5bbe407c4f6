"""--pair-where: the seed-robustness grid as one command, and filters that never run code."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_user_error, run_cli, store_digest

from reprstore.store import Store
from reprstore.workflows.comparison import compare, plan_grid
from reprstore.workflows.ingest import import_files

N = 40
TASKS = {"full": "sst2,mnli", "lora": "qqp", "adapter": "mnli,rte", "prefix": "cola"}
METHOD = {"full": "full", "lora": "lora", "adapter": "adapter", "prefix": "prefix"}
SEEDS = ("0", "1", "2")
LAYERS = ("layer_2", "layer_10")


def debiased_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Song et al. (2012)'s unbiased HSIC with linear kernels, in float64, from Gram matrices."""

    def hsic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
        n = len(k)
        k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))  # noqa: E741
        one = np.ones(n)
        value = (
            np.trace(k @ l)
            + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (one @ k @ l @ one)
        )
        return float(value / (n * (n - 3)))

    k, l = x @ x.T, y @ y.T  # noqa: E741
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


@pytest.fixture(scope="module")
def grid_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 models × 3 seeds × 2 layers, tagged from runs.csv (model,tasks,method)."""
    tmp = tmp_path_factory.mktemp("grid")
    base = np.random.default_rng(0).normal(size=(N, 5))
    for i, (model, seed) in enumerate(itertools.product(TASKS, SEEDS)):
        rng = np.random.default_rng(100 + i)
        for layer in LAYERS:
            x = base @ rng.normal(size=(5, 6)) + 0.7 * rng.normal(size=(N, 6))
            np.save(tmp / f"{layer}.npy", x.astype(np.float32))
        import_files(tmp / "s.zarr", [tmp / f"{layer}.npy" for layer in LAYERS], name=model,
                     seed=seed, layer="{stem}", dtype="float32")  # fmt: skip
    rows = "".join(f'{m},"{t}",{METHOD[m]}\n' for m, t in TASKS.items())
    (tmp / "runs.csv").write_text("model,tasks,method\n" + rows)
    tagged = run_cli("tag", "s.zarr", "--from", "runs.csv", cwd=tmp)
    assert tagged.returncode == 0, tagged.stderr
    return tmp


def expected_pairs() -> list[tuple[str, str, str, str, str]]:
    """Independent enumeration: runs × runs, same layer, seeds differ, task sets disjoint."""
    runs = list(itertools.product(TASKS, SEEDS))
    out = []
    for (ma, sa), (mb, sb), layer in itertools.product(runs, runs, LAYERS):
        if sa != sb and not set(TASKS[ma].split(",")) & set(TASKS[mb].split(",")):
            out.append((ma, sa, mb, sb, layer))
    return out


def test_seed_robustness_grid_is_one_command(grid_store: Path) -> None:
    result = run_cli("cka", "s.zarr", "--a", "*", "--b", "*", "--match", "layer",
                     "--pair-where", "a.seed != b.seed and not (a.tasks & b.tasks)",
                     "--out", "grid.json", cwd=grid_store)  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads((grid_store / "grid.json").read_text())["rows"]
    got = sorted((r["a_model"], r["a_seed"], r["b_model"], r["b_seed"], r["a_layer"]) for r in rows)
    assert got == sorted(expected_pairs()) and len(got) == 120
    store = Store.open(grid_store / "s.zarr")
    for r in rows[:: max(1, len(rows) // 6)]:  # a spread of pairs against the reference
        x = store.read_rows(_key(store, r, "a"), 0, N).astype(np.float64)
        y = store.read_rows(_key(store, r, "b"), 0, N).astype(np.float64)
        assert r["cka"] == pytest.approx(debiased_linear_cka(x, y), rel=1e-6)
        assert r["a_tasks"] == TASKS[r["a_model"]] and r["b_method"] == METHOD[r["b_model"]]


def _key(store: Store, row: dict, side: str):  # type: ignore[no-untyped-def]
    (info,) = store.select(
        f"model={row[f'{side}_model']},seed={row[f'{side}_seed']},layer={row[f'{side}_layer']}"
    )
    return info.key


def test_pair_filter_on_keys_step_and_attributes(grid_store: Path) -> None:
    store = Store.open(grid_store / "s.zarr")
    where = "a.method == 'lora' and a.layer == b.layer and b.model in ['full', 'prefix']"
    plan = plan_grid(store, "seed=0", "seed=1", pair_where=where)
    got = sorted((plan.reprs[i].key.model, plan.reprs[j].key.model, plan.reprs[i].key.layer)
                 for i, j in plan.pairs)  # fmt: skip
    assert got == sorted(itertools.product(["lora"], ["full", "prefix"], LAYERS))
    df = compare(store, "seed=0,model=full", "seed=2,model=lora", match=["layer"])
    assert list(df["a_tasks"]) == ["sst2,mnli"] * 2 and list(df["b_tasks"]) == ["qqp"] * 2
    plan = plan_grid(store, "seed=0,layer=layer_2", "seed=1,layer=layer_2",
                     pair_where="a.step == None and a.checkpoint == 'final'")  # fmt: skip
    assert len(plan.pairs) == 16  # 'final' holds no step number


BAD_PAIR_FILTERS = [
    "a.seed.__class__ == 1",  # attribute access beyond a.<key>
    "__import__('os').system('touch pwned') == 0",  # imports and calls
    "open('pwned', 'w')",
    "a.seed != b.seed and (lambda: 1)()",
    "[x for x in a.tasks]",
    "a.colour == 'red'",  # no such key or attribute
    "a.seed !=",
]


@pytest.mark.parametrize("expr", BAD_PAIR_FILTERS)
def test_bad_pair_filters_are_refused_and_never_run(
    grid_store: Path, expr: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process (typer's CliRunner) for speed; one-line errors as from the shell."""
    from typer.testing import CliRunner

    from reprstore.cli.app import app

    monkeypatch.chdir(grid_store)
    before = store_digest(grid_store / "s.zarr")
    args = ["cka", "s.zarr", "--a", "*", "--b", "*", "--pair-where", expr, "--out", "bad.csv"]
    r = CliRunner().invoke(app, args)
    assert_user_error(subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr),
                      "--pair-where")  # fmt: skip
    assert not (grid_store / "pwned").exists() and not (grid_store / "bad.csv").exists()
    assert store_digest(grid_store / "s.zarr") == before


def test_a_filter_that_keeps_nothing_says_so(grid_store: Path) -> None:
    result = run_cli("cka", "s.zarr", "--a", "seed=0", "--b", "seed=0",
                     "--pair-where", "a.seed != b.seed", cwd=grid_store)  # fmt: skip
    assert_user_error(result, "No pair left", "--pair-where")


def test_timeline_pairs_by_step_in_natural_order(tmp_path: Path) -> None:
    from reprstore.workflows.bulk import import_tree

    rng = np.random.default_rng(4)
    steps = (5, 20, 100, 1000)
    for step in steps:
        (tmp_path / "t" / f"step{step}").mkdir(parents=True)
        np.save(tmp_path / "t" / f"step{step}" / "h.npy", rng.normal(size=(12, 3)))
    import_tree(tmp_path / "s.zarr", str(tmp_path / "t/{checkpoint}/{layer}.npy"), name="m")
    df = compare(tmp_path / "s.zarr", "*", "*", pair_where="a.step < b.step")
    got = list(zip(df["a_checkpoint"], df["b_checkpoint"], strict=True))
    want = [(f"step{x}", f"step{y}") for x in steps for y in steps if x < y]  # numeric order
    assert got == want
