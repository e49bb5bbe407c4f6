"""``drift`` over several seeds' checkpoints: grouped by the seed their paths name, each
seed against its own reference (values against numpy), or a one-line message naming the
clashing files and how to name seeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_user_error, run_cli
from scipy import stats
from torch import nn

STEPS = (0, 10, 20)


def save_run(folder: Path, seed: int, pattern: str) -> None:
    """step0, step10, step20 of one small model trained from its own seed."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    for step in STEPS:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        path = folder / pattern.format(seed=seed, step=step)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)


def rel_change(path: Path, ref: Path) -> float:
    """‖w − r‖/‖r‖ over every tensor as one float64 vector."""
    w, r = (torch.load(p, weights_only=True) for p in (path, ref))
    wv = np.concatenate([w[k].double().numpy().ravel() for k in r])
    rv = np.concatenate([r[k].double().numpy().ravel() for k in r])
    return float(np.linalg.norm(wv - rv) / np.linalg.norm(rv))


@pytest.mark.parametrize("pattern", ["seed{seed}/step{step}.pt", "seed{seed}-step{step}.pt"])
def test_seeds_grouped_each_against_its_own_reference(tmp_path: Path, pattern: str) -> None:
    for seed in range(3):
        save_run(tmp_path / "runs", seed, pattern)
    glob = "runs/" + pattern.replace("{seed}", "*").replace("{step}", "*")
    done = run_cli("drift", "--checkpoints", glob, "--against", "step0", "--out", "d.json",
                   cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "each of 3 seed(s) against its own" in " ".join(done.stdout.split())
    rows = json.loads((tmp_path / "d.json").read_text())["rows"]
    whole = [r for r in rows if r["parameter"] == "(all)"]
    assert [(r["seed"], r["checkpoint"]) for r in whole] == [
        (str(s), f"step{t}") for s in range(3) for t in STEPS
    ]
    for r in whole:
        path = tmp_path / "runs" / pattern.format(seed=r["seed"], step=r["step"])
        ref = tmp_path / "runs" / pattern.format(seed=r["seed"], step=0)
        assert r["rel_change"] == pytest.approx(rel_change(path, ref), rel=1e-12)
    assert whole[0]["rel_change"] == 0.0


def test_same_labels_without_seeds_get_a_correct_message(tmp_path: Path) -> None:
    for seed, name in enumerate(("a", "b")):
        save_run(tmp_path / name, seed, "step{step}.pt")
    done = run_cli("drift", "--checkpoints", "*/step*.pt", cwd=tmp_path)
    assert_user_error(done, "2 checkpoint files have the same label 'step0'")
    assert "a/step0.pt, b/step0.pt)" in done.stderr and "seed<N>" in done.stderr
    assert "step20" not in done.stderr  # names the clash, not every label
    save_run(tmp_path / "seed5", 5, "step{step}.pt")
    mixed = run_cli("drift", "a/step0.pt", "seed5/step0.pt", cwd=tmp_path)
    assert_user_error(mixed, "a/step0.pt names no seed while other checkpoints do (seed 5)")
    missing = run_cli("drift", "seed5/step0.pt", "seed5/step10.pt", "--against", "final",
                      cwd=tmp_path)  # fmt: skip
    assert_user_error(missing, "neither a checkpoint label of seed 5 (step0, step10)")


def test_seed_drift_csv_summarizes_over_seeds(tmp_path: Path) -> None:
    """The CSV read back keeps seed as a key (not a measure); rel_change ≥ 0 gets its
    interval on the log scale, inside [0, ∞)."""
    for seed in range(3):
        save_run(tmp_path / "runs", seed, "seed{seed}/step{step}.pt")
    done = run_cli("drift", "--checkpoints", "runs/seed*/step*.pt", "--out", "d.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    got = run_cli("summarize", "d.csv", "--by", "parameter,checkpoint", "--measure",
                  "rel_change", "--json", cwd=tmp_path)  # fmt: skip
    assert got.returncode == 0, got.stderr
    row = next(r for r in json.loads(got.stdout)
               if r["parameter"] == "(all)" and r["checkpoint"] == "step20")  # fmt: skip
    runs = tmp_path / "runs"
    v = np.array([rel_change(runs / f"seed{s}/step20.pt", runs / f"seed{s}/step0.pt")
                  for s in range(3)])  # fmt: skip
    q = stats.t.ppf(0.975, 2) * v.std(ddof=1) / np.sqrt(3) / v.mean()
    assert row["n"] == 3 and row["mean"] == pytest.approx(v.mean(), rel=1e-12)
    assert [row["ci_lo"], row["ci_hi"]] == pytest.approx(
        [v.mean() * np.exp(-q), v.mean() * np.exp(q)], rel=1e-9
    )
