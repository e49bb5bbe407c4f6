"""MkDocs hook: repository files outside ``docs/`` that a page links to are built too.

A page may link to a file elsewhere in the repository by a plain relative link
(``../benchmarks/results/2026-12-05-coverage.md``), which works on GitHub. Such a target
is added to the site under ``repo/`` (``repo/benchmarks/results/…``) and the link is
pointed at that copy while the page is built, so the same Markdown works on GitHub and on
the site, and ``mkdocs build --strict`` still fails on a link to a file that is missing.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

PREFIX = "repo"
LINK = re.compile(r"(\]\()((?:\.\./)+[^)#\s]+)")


def _outside(page_src: Path, target: str, docs: Path) -> Path | None:
    """The repository file ``target`` (relative to the page) names, if outside docs/."""
    path = (page_src.parent / target).resolve()
    root = docs.parent
    if path.is_file() and not path.is_relative_to(docs) and path.is_relative_to(root):
        return path
    return None


def on_files(files: Files, config: Any) -> Files:
    docs = Path(config["docs_dir"]).resolve()
    for page in list(files.documentation_pages()):
        if page.abs_src_path is None:
            continue
        src = Path(page.abs_src_path)
        for _, target in LINK.findall(src.read_text(encoding="utf-8")):
            path = _outside(src, target, docs)
            if path is None:
                continue
            uri = f"{PREFIX}/{path.relative_to(docs.parent).as_posix()}"
            if files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    docs = Path(config["docs_dir"]).resolve()
    src = Path(page.file.abs_src_path)

    def copy(found: re.Match[str]) -> str:
        path = _outside(src, found.group(2), docs)
        if path is None:
            return found.group(0)  # left to mkdocs' own check
        uri = f"{PREFIX}/{path.relative_to(docs.parent).as_posix()}"
        here = posixpath.dirname(page.file.src_uri)
        return found.group(1) + posixpath.relpath(uri, here or ".")

    return LINK.sub(copy, markdown)
