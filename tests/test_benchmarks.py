"""The benchmark suite runs end to end at a tiny size and every case produces its figures.

No timing is asserted: the point is that ``python -m benchmarks`` keeps working as the
package changes. The peer libraries are optional (CI installs only ``.[dev]``): the
end-to-end run skips them (``--no-peers``) to stay within about two minutes, and the
adapters are checked in-process, on small arrays, where a peer is installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench-out")
    work = tmp_path_factory.mktemp("bench-work")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tiny", "--no-peers",
         "--out", str(out), "--work", str(work)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (doc_path,) = out.glob("*-tiny.json")
    doc = json.loads(doc_path.read_text())
    doc["_out"], doc["_work"] = out, work
    return doc


def _rows(doc: dict, case: str) -> list[dict]:
    return [r for r in doc["summary"]["rows"] if r["case"] == case]


@pytest.mark.slow
def test_every_case_produced_its_figures(tiny_run: dict) -> None:
    ceil = tiny_run["summary"]["ceilings"]
    assert ceil["gemm_float32"] > 0 and ceil["gemm_float64"] > 0 and ceil["disk_mb_s"] > 0
    for case in ("cka_memory", "grid", "mbgrid", "minibatch", "mbmemory", "extract", "workers",
                 "import"):  # fmt: skip
        rows = _rows(tiny_run, case)
        assert rows, case
        ours = [r for r in rows if "reprstore" in r["method"]]
        assert ours, case
        for r in ours:
            assert r["status"] == "ok", (case, r["method"], r["status"])
            assert r["wall_s"] > 0 and r["peak_rss_mib"] >= 0, (case, r)
    for r in _rows(tiny_run, "extract"):
        assert r["status"] == "ok", r
        if "extract" in r["method"].split(":")[-1]:
            # float16 halves the bytes, unless the float16 guard kept float32 (the random
            # CNN's mean-pooled features: offsets far beyond their spread)
            assert r["bytes_per_sample"] > 0
            assert r["ratio_vs_float32"] > 1 or r["float16_fallback"], r
    # peers were skipped, and say so rather than crash
    peers = [r for r in _rows(tiny_run, "cka_memory") if "torch" in r["method"]]
    assert peers and all(r["status"].startswith("skipped") for r in peers)


@pytest.mark.slow
def test_reprstore_agrees_with_the_float64_oracle(tiny_run: dict) -> None:
    for case in ("cka_memory", "grid", "workers"):
        for r in _rows(tiny_run, case):
            exact = "minibatch" not in r["method"]
            if exact and r["method"].startswith(("reprstore", "numpy float64")):
                assert r["max_rel_err"] < 1e-6, (case, r["method"], r["max_rel_err"])


@pytest.mark.slow
def test_minibatch_grid_agrees_with_the_oracle_of_the_same_batches(tiny_run: dict) -> None:
    rows = [r for r in _rows(tiny_run, "mbgrid") if r["method"].startswith("reprstore")]
    assert {"linear" in r["method"] for r in rows} == {True, False}  # linear and rbf
    for r in rows:
        assert r["max_abs_err"] <= (1e-6 if "float32" in r["method"] else 1e-9), r


@pytest.mark.slow
def test_the_gram_space_reference_is_skipped_with_a_reason_when_too_large(tiny_run: dict) -> None:
    from benchmarks import config, synth
    from benchmarks.harness import run_task

    ds = synth.Dataset(tiny_run["_work"], config.TINY.cka_n[0], config.TINY.features, 1)
    out = run_task(
        "benchmarks.tasks_cka:numpy_gram",
        {"store": str(ds.store), "xs": [["0", 0]],
         "ys": [["1", 0]], "estimator": "debiased", "mem_cap": 2**30, "gram_limit": 1},
        timeout=120,
    )  # fmt: skip
    assert out["status"].startswith("skipped: N×N = "), out


@pytest.mark.slow
def test_report_files_and_goals(tiny_run: dict) -> None:
    out = tiny_run["_out"]
    md = (out / "latest.md").read_text()
    for title in ("Ceilings", "Goals", "Layer grid", "Minibatch", "Extraction", "Scale-out",
                  "import"):  # fmt: skip
        assert title in md, title
    assert list(out.glob("*-tiny-memory.png")) and list(out.glob("*-tiny-grid.png"))
    goals = tiny_run["summary"]["goals"]
    for key in ("peak_rss_flat_in_n", "exact_cka_vs_numpy_float64", "grid_vs_pair_runs",
                "grid_vs_numpy_float32", "extract_overhead", "import_peak_rss",
                "five_measures_vs_cka"):  # fmt: skip
        assert key in goals, key


@pytest.mark.slow
def test_render_rewrites_the_report_from_the_json(tiny_run: dict, tmp_path: Path) -> None:
    (doc_path,) = tiny_run["_out"].glob("*-tiny.json")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--render", str(doc_path), "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (tmp_path / "latest.md").read_text()
    assert "## Goals" in md and "Layer grid" in md
    assert list(tmp_path.glob("*-tiny-memory.png"))


def test_references_match_each_other() -> None:
    from benchmarks import references

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)) + 2.0
    y = x @ rng.normal(size=(12, 9)) + rng.normal(size=(300, 9)) - 1.0
    blocked = references.oracle([x], [y], block_rows=64)
    xc, yc = references.centre(x.copy()), references.centre(y.copy())
    for e in ("biased", "debiased"):
        feat = references.feature_matrix([xc], [yc], [e])[e][0][0]
        gram = references.gram_cka(xc, yc, e)
        assert blocked[e][0][0] == pytest.approx(feat, rel=1e-12)
        assert gram == pytest.approx(feat, rel=1e-10)


@pytest.mark.parametrize("peer", ["torch_cka", "ckatorch", "cka_pytorch"])
def test_peer_adapters_on_small_arrays(peer: str) -> None:
    pytest.importorskip(peer)
    if peer == "cka_pytorch":
        pytest.importorskip("lightning")
    from benchmarks import peers

    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    y = (x @ rng.normal(size=(16, 16)) + rng.normal(size=(400, 16))).astype(np.float32)
    fn = {
        "torch_cka": peers.torch_cka_matrix,
        "ckatorch": peers.ckatorch_class_matrix,
        "cka_pytorch": peers.cka_pytorch_matrix,
    }[peer]
    mat = fn([x], [y], 100)
    assert mat.shape == (1, 1) and 0 < mat[0, 0] <= 1


def test_repeated_measurements_keep_the_fastest_time_and_the_largest_rss() -> None:
    from benchmarks.runner import _best

    def row(wall: float, rss: float, status: str = "ok") -> dict:
        return {"method": "m", "status": status, "wall_s": wall, "peak_rss_mib": rss}

    best = _best([row(3.0, 100), row(2.0, 90), row(2.5, 120)])
    assert best["wall_s"] == 2.0 and best["peak_rss_mib"] == 120
    assert best["wall_s_runs"] == [3.0, 2.0, 2.5]
    failed = _best([row(1.0, 10), {"method": "m", "status": "timeout (30 s)"}])
    assert failed["status"] == "timeout (30 s)"


def _run_tiny(name: str, tmp_path: Path) -> Path:
    """Run ``python -m benchmarks.NAME --tiny`` into ``tmp_path``; its JSON report."""
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--tiny", "--out", str(tmp_path / "out"),
         "--work", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (doc_path,) = (tmp_path / "out").glob(f"*-{name}-tiny.json")
    return doc_path


@pytest.mark.slow
def test_the_wide_benchmark_runs_and_agrees_with_numpy(tmp_path: Path) -> None:
    """``python -m benchmarks.wide --tiny``: every reprstore route that ran matches the
    numpy float64 Gram computation of the same data."""
    doc_path = _run_tiny("wide", tmp_path)
    rows = json.loads(doc_path.read_text())["rows"]
    ran = [r for r in rows if r["method"].startswith("reprstore") and r["status"] == "ok"]
    assert {r["kernel"] for r in ran} == {"linear", "rbf"}
    for r in ran:
        assert r["abs_diff_vs_numpy"] < 1e-9, r
    assert list((tmp_path / "out").glob("*-wide-tiny.md"))


@pytest.mark.slow
def test_the_permutations_benchmark_runs_and_its_checks_hold(tmp_path: Path) -> None:
    """``python -m benchmarks.permutations --tiny``: the new kernel gather gives the old
    one's values bit for bit, each estimator's test permutes what it says, and both
    report files are written."""
    doc = json.loads(_run_tiny("permutations", tmp_path).read_text())
    assert all(doc["checks"].values()), doc["checks"]
    assert all(r["per_permutation_ms"] == r["per_permutation_ms"] for r in doc["rows"])  # not NaN
    assert list((tmp_path / "out").glob("*-permutations-tiny.md"))


@pytest.mark.slow
def test_the_wide_measures_benchmark_runs_and_its_checks_hold(tmp_path: Path) -> None:
    """``python -m benchmarks.wide_measures --tiny``: both grids ran, their cka values
    agree (the five measures' run computes the same cka), and the ratio is reported."""
    doc = json.loads(_run_tiny("wide_measures", tmp_path).read_text())
    assert all(doc["checks"].values()), doc
    assert doc["ratio"] > 0 and len(doc["rows"]) == 2
    assert list((tmp_path / "out").glob("*-wide_measures-tiny.md"))


@pytest.mark.slow
def test_the_rerun_benchmark_runs_and_its_checks_hold(tmp_path: Path) -> None:
    """``python -m benchmarks.rerun --tiny``: the rerun, the no-cache run and the grown grid
    keep the first run's bits, and the report is written."""
    doc_path = _run_tiny("rerun", tmp_path)
    checks = json.loads(doc_path.read_text())["checks"]
    for name in ("rerun_bit_identical", "rerun_reused_all", "resume_bit_identical",
                 "no_cache_bit_identical", "grow_kept_old_bits"):  # fmt: skip
        assert checks[name] is True, (name, checks)
    assert list((tmp_path / "out").glob("*-rerun-tiny.md"))


@pytest.mark.slow
def test_the_startup_benchmark_runs_and_reports_every_command(tmp_path: Path) -> None:
    """``python -m benchmarks.startup --tiny``: every command ran (``ls`` of a missing store
    exits 1 by design), its median was measured and its heavy imports recorded. No timing
    is asserted: timings are measured, not tested."""
    doc_path = _run_tiny("startup", tmp_path)
    rows = {r["command"]: r for r in json.loads(doc_path.read_text())["rows"]}
    assert {"reprstore --help", "reprstore ls STORE", "reprstore info STORE layer=layer_0"} <= set(
        rows
    )
    for name, r in rows.items():
        assert r["exit_codes"] == ([1] if "MISSING" in name else [0]), r
        assert len(r["wall_s_runs"]) == 2 and r["median_s"] > 0, r
        assert (r["goal_s"] is None) == (r["met"] is None), r
    assert "torch" not in rows["reprstore ls STORE"]["heavy_imports"]
    assert list((tmp_path / "out").glob("*-startup-tiny.md"))


@pytest.mark.slow
def test_the_memory_benchmark_runs_every_row(tmp_path: Path) -> None:
    """``python -m benchmarks.memory --tiny``: every row of the review's table ran or was
    refused in one line (exit 1), and the report is written. Memory is bounded by
    tests/test_memory_honesty.py; here only that the benchmark works."""
    doc_path = _run_tiny("memory", tmp_path)
    rows = json.loads(doc_path.read_text())["rows"]
    assert len(rows) == 7  # --tiny: a row or two of each kind (18 at --quick and full size)
    for r in rows:
        assert r["outcome"] in ("ran", "refused"), r
        assert r["peak_mib"] > 0 and r["base_mib"] > 0, r
    assert list((tmp_path / "out").glob("*-memory-tiny.md"))


@pytest.mark.slow
def test_the_codecs_benchmark_runs_and_its_ratios_are_the_stored_bytes(tmp_path: Path) -> None:
    """``python -m benchmarks.codecs --tiny``: every codec round-trips the chunk (checked
    inside), each ratio is the chunk's bytes over its stored bytes, and 'none' stores the
    raw bytes of a 256 × 64 float16 chunk."""
    doc = json.loads(_run_tiny("codecs", tmp_path).read_text())
    assert {r["dtype"] for r in doc["rows"]} == {"float16", "float32", "bfloat16"}
    for row in doc["rows"]:
        assert row["ratio"] == pytest.approx(row["bytes"] / row["stored"], rel=1e-12)
        assert row["bytes"] == 256 * 64 * (2 if row["dtype"] == "float16" else 4)
        if row["codec"] == "none":
            assert row["stored"] == row["bytes"]
    assert list((tmp_path / "out").glob("*-codecs-tiny.md"))


def test_the_grid_task_computes_every_run_instead_of_reading_the_result_cache(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """A timed repeat of a store grid must compute: the store's result cache would hand the
    second run the first one's values in a fraction of the time (measured 2026-12-07: a
    minibatch grid 'ran' in 0.27 s against 2.12 s). Nothing is written to the cache."""
    import reprstore
    from benchmarks.synth import MODEL
    from benchmarks.tasks_cka import reprstore_cka

    store = tmp_path / "s.zarr"
    for seed in ("0", "1"):
        for k in range(2):
            x = rng.normal(size=(300, 8)).astype(np.float32)
            np.save(tmp_path / "x.npy", x)
            reprstore.import_files(store, [tmp_path / "x.npy"], name=MODEL, seed=seed,
                                   layer=f"l{k}")  # fmt: skip
    params = {"store": str(store), "xs": [["0", 0], ["0", 1]], "ys": [["1", 0], ["1", 1]],
              "mode": "grid", "estimator": "debiased"}  # fmt: skip
    run = reprstore_cka(params)
    first, second = run(), run()
    assert first["values"] == second["values"]
    assert not (store / "cache" / "results").exists() or not any(
        (store / "cache" / "results").rglob("*.json")
    )


def test_rerun_cli_reaps_a_run_that_ends_before_its_kill(tmp_path: Path) -> None:
    """benchmarks.rerun's killed run: one that ends before ``kill_after`` is reaped once,
    with its exit status (a Popen.wait first had reaped it: 'No child processes')."""
    from benchmarks.rerun import _cli

    assert _cli(["--help"], tmp_path, kill_after=60.0)["rc"] == 0
