"""Path templates that take a representation's key from a file's path.

``runs/{model}_seed{seed}/step_{checkpoint}/layer_{layer}.pt`` names the key fields of
every file below ``runs/`` whose path fits. A template is turned into a regular
expression in which every literal character is escaped and every field matches one or
more characters of a single path component; nothing of the user's string is ever
formatted or evaluated. ``*`` matches any run of characters inside one component (a part
of the path that is not part of the key); ``{{`` and ``}}`` are literal braces.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from reprstore.errors import InputError

TEMPLATE_FIELDS = ("model", "seed", "checkpoint", "dataset", "layer")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|\*|[{}]|[^{}*]+")
_FIELD = re.compile(r"(?<!\{)\{[A-Za-z_][A-Za-z0-9_]*\}")


def is_template(text: str) -> bool:
    """Whether ``text`` holds a ``{field}`` (a path template, not a file name)."""
    return _FIELD.search(text) is not None


@dataclass(frozen=True)
class PathTemplate:
    """A compiled template.

    Attributes
    ----------
    text : str
        The template as given.
    root : Path
        The longest leading part without fields or ``*``: where the walk starts.
    fields : tuple of str
        The key fields the template names, in order of first appearance.
    pattern : re.Pattern
        Matches a path relative to ``root`` (``/``-separated).
    """

    text: str
    root: Path
    fields: tuple[str, ...]
    pattern: re.Pattern[str]

    @classmethod
    def parse(cls, text: str) -> PathTemplate:
        """Compile ``text``; :class:`InputError` for unknown or malformed fields."""
        parts = PurePosixPath(text.replace(os.sep, "/")).parts
        fixed: list[str] = []
        for part in parts[:-1]:
            if "{" in part or "}" in part or "*" in part:
                break
            fixed.append(part)
        rest = "/".join(parts[len(fixed) :])
        regex, fields = _compile(rest, text)
        return cls(text, Path(*fixed) if fixed else Path("."), tuple(fields), re.compile(regex))

    def match(self, relative: str) -> dict[str, str] | None:
        """The fields of a ``/``-separated path relative to :attr:`root`, or None."""
        found = self.pattern.fullmatch(relative)
        return None if found is None else {k: v for k, v in found.groupdict().items()}

    def walk(self, hidden: list[Path] | None = None) -> Iterator[tuple[Path, dict[str, str]]]:
        """Every file below :attr:`root` that fits, with its fields, in sorted path order.

        Hidden files and folders (a name starting with ``.``: ``.git``, ``.ipynb_checkpoints``)
        are skipped, and not descended into, unless the template's part at that depth starts
        with a literal ``.``; each one skipped is appended to ``hidden``. Links to files are
        followed (the file is then checked like any other); links to folders are not.
        """
        if not self.root.is_dir():
            raise InputError(
                f"The import template {self.text!r} starts at folder {self.root}, "
                "which does not exist."
            )
        depth = self.pattern.pattern.count("/")
        for folder, dirs, files in os.walk(self.root):
            here = Path(folder).relative_to(self.root)
            level = len(here.parts)
            dirs[:] = sorted(self._visible(here, dirs, level, hidden))
            if level >= depth:
                dirs.clear()  # deeper folders cannot fit: the template fixes the depth
            for name in sorted(self._visible(here, files, level, hidden)):
                relative = (here / name).as_posix()
                fields = self.match(relative)
                if fields is not None:
                    yield self.root / here / name, fields

    def _visible(
        self, here: Path, names: list[str], level: int, hidden: list[Path] | None
    ) -> list[str]:
        """``names`` without the hidden ones (recorded in ``hidden``) the template skips."""
        if self._literal_dot(level):
            return names
        out = []
        for name in names:
            if name.startswith("."):
                if hidden is not None:
                    hidden.append(self.root / here / name)
            else:
                out.append(name)
        return out

    def _literal_dot(self, level: int) -> bool:
        """Whether the template's part at ``level`` below the root starts with a literal '.'."""
        parts = PurePosixPath(self.text.replace(os.sep, "/")).parts[len(self.root.parts) :]
        return level < len(parts) and parts[level].startswith(".")


def _compile(rest: str, text: str) -> tuple[str, list[str]]:
    """The regular expression of the part of a template below its root."""
    out: list[str] = []
    fields: list[str] = []
    for token in _TOKEN.finditer(rest):
        piece, name = token.group(0), token.group(1)
        if piece == "{{" or piece == "}}":
            out.append(re.escape(piece[0]))
        elif name is not None:
            if name not in TEMPLATE_FIELDS:
                raise InputError(
                    f"Unknown field {{{name}}} in the import template {text!r}. "
                    f"Expected some of {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)} "
                    "(and * for parts that are not in the key)."
                )
            if name in fields:
                out.append(f"(?P={name})")
            else:
                fields.append(name)
                out.append(f"(?P<{name}>[^/]+?)")
        elif piece == "*":
            out.append("[^/]*?")
        elif piece in "{}":
            raise InputError(
                f"Unbalanced {piece!r} in the import template {text!r}; write {piece * 2} "
                "for a literal brace."
            )
        else:
            out.append(re.escape(piece))
    return "".join(out), fields
