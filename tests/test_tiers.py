"""The two test tiers: CI runs exactly the README's test commands, and the default run
leaves out the slow tier while ``-m slow`` selects it (docs/testing.md)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pytest_commands(text: str) -> list[str]:
    """The ``python -m pytest`` command lines of ``text``, comments and spacing dropped."""
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    return [" ".join(shlex.split(ln)) for ln in lines if ln.startswith("python -m pytest")]


def test_ci_runs_exactly_the_readme_test_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Install and test") :]
    section = section[: section.index("\n## ", 3)]
    (block,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    documented = _pytest_commands(block)
    assert documented == ["python -m pytest -q -n auto", "python -m pytest -q -n auto -m slow"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert _pytest_commands(ci) == documented
    assert "set -euo pipefail" in ci  # pytest's exit 5 (no test selected) fails CI


def test_default_run_leaves_out_the_slow_tier_and_m_slow_selects_it() -> None:
    """pytest keeps the last ``-m``: the one on the command line overrides addopts'."""
    pyproject = (ROOT / "pyproject.toml").read_text()  # (tomllib is Python ≥ 3.11)
    (addopts,) = re.findall(r'^addopts = "(.*)"$', pyproject, re.M)
    args = shlex.split(addopts)
    assert args[args.index("-m") + 1] == "not slow"
    assert re.search(r'^markers = \[.*"slow: ', pyproject, re.M)


def test_m_slow_on_the_command_line_selects_the_slow_tier() -> None:
    """tests/test_cache.py holds both tiers: the default run and ``-m slow`` collect two
    disjoint sets that together hold every test function of the module."""

    def collected(*args: str) -> set[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
             "tests/test_cache.py", *args],
            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return {ln for ln in proc.stdout.splitlines() if "::" in ln}

    default, slow = collected(), collected("-m", "slow")
    assert default and slow and not default & slow
    names = re.findall(r"^def (test_\w+)", (ROOT / "tests" / "test_cache.py").read_text(), re.M)
    seen = {t.split("::")[1].split("[")[0] for t in default | slow}
    assert seen == set(names)
