"""docs/ stays true: every command, option, function, template field and result column
is documented, every documented condition parses, and every relative link resolves."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def text(name: str) -> str:
    return (DOCS / name).read_text()


def test_every_command_is_in_cli_md() -> None:
    import typer.main

    from reprstore.cli.app import app

    group = typer.main.get_command(app)
    commands = sorted(group.commands)  # type: ignore[attr-defined]
    assert {"import", "cka", "ls"} <= set(commands)
    cli = text("cli.md")
    missing = [c for c in commands if f"reprstore {c}" not in cli]
    assert not missing, f"commands not in docs/cli.md: {missing}"


@pytest.mark.parametrize("command", ["import", "cka"])
def test_every_option_of_import_and_cka_is_in_cli_md(command: str) -> None:
    import typer.main

    from reprstore.cli.app import app

    cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    options = [o for p in cmd.params for o in p.opts if o.startswith("--") and o != "--help"]
    cli = text("cli.md")
    missing = [o for o in options if o not in cli]
    assert not missing, f"{command} options not in docs/cli.md: {missing}"


def test_condition_functions_and_template_fields_are_documented() -> None:
    from reprstore.expr import FUNCTIONS
    from reprstore.sources.templates import TEMPLATE_FIELDS

    cli = text("cli.md")
    assert [f for f in FUNCTIONS if f"`{f}(" not in cli] == []
    assert [f for f in TEMPLATE_FIELDS if f"`{{{f}}}`" not in cli] == []


def _examples(option: str) -> list[str]:
    return re.findall(rf'^{option} "(.*?)"(?:\s+#.*)?$', text("cli.md"), re.M)


def test_every_documented_condition_parses() -> None:
    from reprstore.expr import parse_pair_filter, parse_row_filter

    rows, pairs = _examples("--where"), _examples("--pair-where")
    assert len(rows) >= 5 and len(pairs) >= 4
    table = {
        "id": np.array(["00017", "01234", "5"]), "region": np.array(["Atlantis", "b", "c"]),
        "label": np.array(["cat", "dog", "cow"]), "split": np.array(["test"] * 3),
        "source": np.array(["x", "synthetic", "y"]),
    }  # fmt: skip
    for expr in rows:
        assert parse_row_filter(expr).mask(table).shape == (3,), expr
    side = {"seed": "0", "tasks": "sst2,mnli", "model": "ft_m", "step": 10, "method": "full",
            "layer": "l1"}  # fmt: skip
    for expr in pairs:
        assert isinstance(parse_pair_filter(expr)(side, {**side, "seed": "1"}), bool), expr


def test_documented_regex_and_id_examples_mean_what_they_say() -> None:
    from reprstore.expr import parse_row_filter

    table = {"id": np.array(["00017", "01234", "5", "00900"]),
             "region": np.array(["Atlantis", "north", "Atlantis2", "x"])}  # fmt: skip
    mask = parse_row_filter("not matches(region, '^Atlantis')").mask(table)
    assert list(mask) == [False, True, False, True]
    assert list(parse_row_filter("id in ['00017', '01234']").mask(table)) == [1, 1, 0, 0]
    assert list(parse_row_filter("startswith(id, '00')").mask(table)) == [1, 0, 0, 1]


def test_every_result_column_and_provenance_field_is_in_results_md(tmp_path: Path) -> None:
    from reprstore.workflows.comparison import EXTRA_COLUMNS, RESULT_COLUMNS, compare
    from reprstore.workflows.ingest import import_files

    results = text("results.md")
    assert [c for c in RESULT_COLUMNS + EXTRA_COLUMNS if f"`{c}`" not in results] == []
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(20, 3)))
    import_files(tmp_path / "s.zarr", [tmp_path / "x.npy"], name="m", layer="l")
    record = compare(tmp_path / "s.zarr", "*", "*").attrs["reprstore"]
    fields = [*record, *record["options"], *record["versions"]]
    assert [f for f in fields if f"`{f}`" not in results] == []


def test_python_page_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/python.md's code blocks, in order, in one namespace, in a fresh folder."""
    pytest.importorskip("xarray")
    blocks = re.findall(r"```python\n(.*?)```", text("python.md"), re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/python.md", "exec"), namespace)  # the page's own code
    assert len(namespace["df"]) == 6


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize(
    "page", ["README.md", "CONTRIBUTING.md", *(f"docs/{p.name}" for p in DOCS.glob("*.md"))]
)
def test_relative_links_resolve(page: str) -> None:
    path = ROOT / page
    targets = [t for t in LINK.findall(path.read_text()) if "://" not in t]
    missing = [t for t in targets if not (path.parent / t).exists()]
    assert not missing, f"{page} links to missing {missing}"


def test_readme_cites_the_docs_not_spec() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "SPEC.md" not in readme
    for page in ("docs/cli.md", "docs/results.md", "docs/estimators.md"):
        assert f"({page}" in readme, page


def test_site_builds_strict_with_the_public_api(tmp_path: Path) -> None:
    """mkdocs.yml builds with zero warnings (a broken link or #anchor fails it), and the API
    reference shows every public name of ``reprstore`` (loaded lazily: the griffe
    extension in docs/hooks/) with its docstring."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (it is in .[dev])")
    import html
    import inspect
    import os
    import subprocess
    import sys

    import reprstore

    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", "mkdocs.yml", "-d", str(site)],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    page = (site / "api" / "index.html").read_text()
    words = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())
    assert " ".join(inspect.getdoc(reprstore.compare).splitlines()[0].split()) in words
    shown = set(re.findall(r'id="reprstore\.(\w+)"', page))
    assert [n for n in reprstore.__all__ if n != "__version__" and n not in shown] == []
    assert 'id="reprstore.metrics.registry.parse_measures"' in page
    assert 'id="reprstore.metrics.base.Measure"' in page
