"""``reprstore timeline``: every checkpoint against a reference checkpoint in one command.

The reference values are debiased CKA (Song et al.'s unbiased HSIC on explicit n × n
kernels, written here) of the stored float32 arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, run_cli
from test_uncertainty import cka_debiased

from reprstore.errors import InputError, NotFoundError
from reprstore.workflows.ingest import import_files
from reprstore.workflows.timelines import timeline

STEPS = ("step0", "step20", "step100")


def cka(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x.astype(np.float64), y.astype(np.float64)
    x, y = x - x.mean(0), y - y.mean(0)  # the estimator on centred rows (the engine centres)
    return cka_debiased(x, y)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """2 seeds × 2 layers × (3 steps + final), later checkpoints closer to the final one."""
    root = tmp_path_factory.mktemp("timeline")
    rng = np.random.default_rng(5)
    arrays = {}
    for seed in ("0", "1"):
        for layer in ("layer_2", "layer_10"):
            final = rng.normal(size=(80, 6))
            for ckpt, noise in (*zip(STEPS, (3.0, 1.0, 0.3), strict=True), ("final", 0.0)):
                x = (final + noise * rng.normal(size=final.shape)).astype(np.float32)
                arrays[(seed, layer, ckpt)] = x
                f = root / f"{seed}{layer}{ckpt}.npy"
                np.save(f, x)
                import_files(root / "runs.zarr", [f], name="toy", seed=seed, layer=layer,
                             checkpoint=ckpt, dtype="float32")  # fmt: skip
    return root, arrays


def test_timeline_command_pairs_every_checkpoint_with_the_reference(runs, tmp_path: Path) -> None:
    root, arrays = runs
    out, png = tmp_path / "t.csv", tmp_path / "t.png"
    result = run_cli("timeline", str(root / "runs.zarr"), "--against", "checkpoint=final",
                     "--out", str(out), "--plot", str(png), "--final-step", "200")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "16 checkpoint(s) against final" in result.stdout
    df = pd.read_csv(out, dtype=str)
    assert len(df) == 2 * 2 * 4 and set(df["a_checkpoint"]) == {"final"}
    assert (df["a_seed"] == df["b_seed"]).all() and (df["a_layer"] == df["b_layer"]).all()
    for _, row in df.iterrows():
        want = cka(arrays[(row["a_seed"], row["a_layer"], "final")],
                   arrays[(row["b_seed"], row["b_layer"], row["b_checkpoint"])])  # fmt: skip
        assert float(row["cka"]) == pytest.approx(want, rel=1e-6, abs=1e-9)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_timeline_against_the_first_checkpoint_with_intervals(runs) -> None:
    root, arrays = runs
    df = timeline(root / "runs.zarr", "step0", "seed=0,layer=layer_2", measures="cka,rsa",
                  ci=0.9, bootstrap=10)  # fmt: skip
    assert list(df["b_checkpoint"]) == [*STEPS, "final"]  # step order, final last
    assert set(df["a_checkpoint"]) == {"step0"} and len(df) == 4
    row = df[df["b_checkpoint"] == "step0"].iloc[0]
    assert row["cka"] == pytest.approx(1.0) and row["rsa"] == pytest.approx(1.0)
    late = df[df["b_checkpoint"] == "final"].iloc[0]
    want = cka(arrays[("0", "layer_2", "step0")], arrays[("0", "layer_2", "final")])
    assert late["cka"] == pytest.approx(want, rel=1e-6)
    assert late["cka_lo"] < late["cka"] < late["cka_hi"]
    assert late["rsa_lo"] < late["rsa"] < late["rsa_hi"]
    assert df.attrs["reprstore"]["options"]["against"] == "step0"


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--against", "checkpoint=*"], "one checkpoint"),
        (["--against", "model=toy"], "names a checkpoint"),
        (["--against", "checkpoint=best"], "stored checkpoints: step0, step20, step100, final"),
        (["--against", "final", "--select", "checkpoint=step0"], "must not name checkpoint"),
        (["--against", "final", "--measure", "pca", "--permutations", "9"], "no permutation"),
    ],
)
def test_timeline_bad_input(runs, args: list[str], needle: str) -> None:
    root, _ = runs
    assert_user_error(run_cli("timeline", str(root / "runs.zarr"), *args), needle)


def test_timeline_refuses_match() -> None:
    with pytest.raises(InputError, match="no --match"):
        timeline("nowhere.zarr", "final", match=["layer"])


def test_timeline_api_names_the_missing_reference(runs) -> None:
    root, _ = runs
    with pytest.raises(NotFoundError, match="among 'seed=1'"):
        timeline(root / "runs.zarr", "checkpoint=step5", "seed=1")
