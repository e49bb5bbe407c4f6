"""List a group's children so that one damaged child does not hide its healthy siblings.

zarr's ``group_keys()``/``array_keys()`` open every child and fail as a whole on the first
unreadable ``zarr.json``. :func:`children` opens them one by one: healthy children are
listed, damaged ones are returned by path with what is wrong, so ``ls`` can mark them,
``verify`` can report them and only the comparisons that need them refuse.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import zarr

from reprstore.store.zarr_internals import default_buffer_prototype, sync

#: What each level below ``reprs/`` is (format 2; format-1 stores lack the dataset level),
#: for matching a damaged node against a selector.
LAYOUT_KEYS = ("model", "seed", "checkpoint", "dataset", "layer")
LAYOUT_KEYS_V1 = ("model", "seed", "checkpoint", "layer")


@dataclass(frozen=True)
class Damaged:
    """A node whose metadata cannot be read: its store path and the reason."""

    path: str
    reason: str

    @property
    def fields(self) -> tuple[str, str, str, str, str]:
        """(model, seed, checkpoint, dataset, layer) as far as the path says ('' if not)."""
        parts = self.path.split("/")[1:]
        if len(parts) == len(LAYOUT_KEYS_V1):  # a format-1 array: no dataset level
            parts = [*parts[:3], "", parts[3]]
        m, s, c, d, layer = [*parts, "", "", "", "", ""][:5]
        return m, s, c, d, layer

    @property
    def label(self) -> str:
        """As :meth:`reprstore.keys.ReprKey.label` writes it (the dataset 'default' left out)."""
        m, s, c, d, layer = self.fields
        run = "/".join(p for p in (m, s, c, "" if d == "default" else d) if p)
        return f"{run}:{layer}" if layer else run

    def matches(self, allows: Callable[[str, str], bool], layout: Sequence[str]) -> bool:
        """Whether the node could hold something a selector asks for.

        ``allows(key, value)`` is the selector's test of one key field (see
        :meth:`reprstore.keys.Selector.allows`); ``layout`` names the levels below ``reprs/``.
        """
        parts = self.path.split("/")[1:]
        return all(allows(key, part) for key, part in zip(layout, parts, strict=False))

    def message(self) -> str:
        return (
            f"{self.label} is damaged ({self.reason}); run 'reprstore verify STORE' and "
            "re-import or re-extract it"
        )


def _list_dir(group: zarr.Group) -> list[str]:
    async def collect() -> list[str]:
        return [k async for k in group.store_path.store.list_dir(group.path)]

    return sorted(sync(collect()))


def _meta_exists(group: zarr.Group, name: str) -> bool:
    key = f"{group.path}/{name}/zarr.json" if group.path else f"{name}/zarr.json"
    store = group.store_path.store
    return sync(store.get(key, prototype=default_buffer_prototype())) is not None


def children(group: zarr.Group, kind: str) -> tuple[list[str], list[Damaged]]:
    """Names of the child groups (``kind="group"``) or arrays of ``group``, sorted.

    Returns
    -------
    names : list of str
    damaged : list of Damaged
        Children with a ``zarr.json`` that cannot be opened (of either kind).
    """
    names: list[str] = []
    damaged: list[Damaged] = []
    for name in _list_dir(group):
        if name == "zarr.json" or name.startswith("."):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                node = group[name]
        except Exception as err:  # bad JSON, missing fields, unknown codecs …
            if _meta_exists(group, name):
                path = f"{group.path}/{name}" if group.path else name
                text = str(err).strip().splitlines()[0] if str(err).strip() else ""
                damaged.append(Damaged(path, f"its zarr.json cannot be read: {text or err!r}"))
            continue
        if (kind == "group") == isinstance(node, zarr.Group):
            names.append(name)
    return names, damaged
