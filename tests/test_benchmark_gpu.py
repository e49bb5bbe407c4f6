"""``python -m benchmarks.gpu``: the ``--device`` rows against the card's GEMM ceiling.

No GPU is lent to this project's CI, so the script runs here with ``--device cpu`` (numpy
products, torch's CPU GEMM): the same rows, tasks and report. Without a GPU,
``--device cuda`` stops in one line before measuring anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _gpu(*args: str, tmp: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", *args, "--out", str(tmp / "out"),
         "--work", str(tmp / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_without_a_gpu_cuda_stops_in_one_line_before_measuring(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the script would run")
    proc = _gpu("--tiny", tmp=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "CUDA GPU" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing measured, nothing written


@pytest.mark.slow
def test_the_gpu_benchmark_runs_on_the_cpu_and_every_row_agrees(tmp_path: Path) -> None:
    proc = _gpu("--tiny", "--device", "cpu", "--repeats", "1", tmp=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = (tmp_path / "out").glob("*-gpu-tiny.json")
    doc = json.loads(path.read_text())
    assert set(doc["ceilings_gflops"]) == {"float64", "float32"}
    rows = [r for r in doc["rows"] if r["case"] != "prepare"]
    assert all(r["status"] == "ok" for r in rows), [r["status"] for r in rows]
    measured = [r for r in rows if r["method"].startswith("reprstore")]
    assert {r["case"] for r in measured} == {"grid", "mbgrid", "wide"}
    for r in measured:
        # float64 products: to rounding; float32 products: within the SPEC's 1e-6
        assert r["max_abs_diff"] < (1e-6 if "float32" in r["method"] else 1e-9), r
        if r["case"] in ("grid", "wide"):
            assert r["gflops"] > 0 and r["ceiling_share"] > 0, r
    md = path.with_suffix(".md").read_text()
    assert "share of ceiling" in md and "torch GEMM float64 on cpu" in md
