"""Names, keys and selectors: pure functions, no I/O.

A representation lives at ``reprs/<model>/<seed>/<checkpoint>/<dataset>/<layer>`` (store
format 2; format 1 had no ``<dataset>`` level) and a dataset at ``datasets/<dataset>``.
This module validates names, maps keys to store paths and back, sorts names in natural
order and parses selectors such as ``model=minilm,seed=*,layer=encoder.layer.*``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

from reprstore.errors import InvalidNameError, SelectorError

REPRS = "reprs"
DATASETS = "datasets"
DEFAULT_DATASET = "default"
SELECTOR_KEYS = ("model", "seed", "checkpoint", "layer", "dataset")
_FORBIDDEN_CHARS = set("/\\,=*?[]\0\n\r\t")


def validate_name(value: str, what: str = "name") -> str:
    """Return ``value`` if it can be one path component of the store, else raise.

    Names may not be empty, contain ``/`` or ``..``, start with ``__`` (reserved by zarr),
    or contain characters that selectors and shells treat specially (``, = * ? [ ]``).
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidNameError(f"Invalid {what}: expected a non-empty name. Got {value!r} instead.")
    if ".." in value or value in {"."}:
        raise InvalidNameError(f"Invalid {what} {value!r}: names may not contain '..'.")
    bad = sorted(set(value) & _FORBIDDEN_CHARS)
    if bad:
        shown = " ".join(repr(c) for c in bad)
        raise InvalidNameError(
            f"Invalid {what} {value!r}: names may not contain {shown}. "
            "Use letters, digits, '.', '-' and '_'."
        )
    if value.startswith("__"):
        raise InvalidNameError(f"Invalid {what} {value!r}: names may not start with '__'.")
    if value != value.strip():
        raise InvalidNameError(f"Invalid {what} {value!r}: remove leading/trailing spaces.")
    return value


@dataclass(frozen=True, order=True)
class ReprKey:
    """Where one representation lives: run (model, seed, checkpoint) × dataset × layer."""

    model: str
    seed: str
    checkpoint: str
    dataset: str
    layer: str

    def __post_init__(self) -> None:
        for f in fields(self):
            validate_name(getattr(self, f.name), f.name)

    @property
    def path(self) -> str:
        """The store path ``reprs/<model>/<seed>/<checkpoint>/<dataset>/<layer>``."""
        return "/".join((REPRS, self.model, self.seed, self.checkpoint, self.dataset, self.layer))

    @property
    def v1_path(self) -> str:
        """Where format-1 stores keep it: ``reprs/<model>/<seed>/<checkpoint>/<layer>``."""
        return "/".join((REPRS, self.model, self.seed, self.checkpoint, self.layer))

    @classmethod
    def from_path(cls, path: str) -> ReprKey:
        """Inverse of :attr:`path`."""
        parts = path.strip("/").split("/")
        if len(parts) != 6 or parts[0] != REPRS:
            raise InvalidNameError(
                "Expected a path reprs/<model>/<seed>/<checkpoint>/<dataset>/<layer>. "
                f"Got {path!r} instead."
            )
        return cls(*parts[1:])

    def label(self) -> str:
        """Human label ``model/seed/checkpoint/dataset:layer``, in the path's order.

        The dataset ``default`` is left out (``model/seed/checkpoint:layer``): names hold no
        ``/``, so the number of slashes tells the two spellings apart.
        """
        run = f"{self.model}/{self.seed}/{self.checkpoint}"
        if self.dataset != DEFAULT_DATASET:
            run = f"{run}/{self.dataset}"
        return f"{run}:{self.layer}"

    def as_dict(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_NUMBER = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting numbers in numeric order: ``layer_2`` < ``layer_10``.

    Digit runs compare as integers, other text as strings (``step20`` < ``step100``,
    ``encoder.layer.2`` < ``encoder.layer.10``); ties between equal numbers spelled
    differently (``01`` and ``1``) fall back to the plain string.
    """
    parts = _NUMBER.split(text)
    out: list[tuple[int, int | str]] = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append((0, int(part)))
        elif part:
            out.append((1, part))
    out.append((-1, text))  # a prefix first (layer_2 < layer_2.a); then the plain string
    return tuple(out)


def key_order(key: ReprKey) -> tuple[tuple[tuple[int, int | str], ...], ...]:
    """Natural sort key of a :class:`ReprKey`, field by field in the key's order."""
    return tuple(natural_key(getattr(key, f.name)) for f in fields(key))


def dataset_path(dataset: str) -> str:
    """The store path of a dataset group."""
    return f"{DATASETS}/{validate_name(dataset, 'dataset')}"


@dataclass(frozen=True)
class Selector:
    """Shell-style globs over ``model, seed, checkpoint, layer, dataset``; missing = ``*``."""

    patterns: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> Selector:
        """Parse ``key=glob,key=glob``; ``*``, empty or ``None`` selects everything."""
        if text is None or text.strip() in ("", "*"):
            return cls()
        seen: dict[str, str] = {}
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise SelectorError(
                    f"Selector part {part!r} is not key=value. "
                    f"Expected e.g. 'model=minilm,layer=encoder.layer.*' with keys "
                    f"{', '.join(SELECTOR_KEYS)}."
                )
            key, value = (s.strip() for s in part.split("=", 1))
            if key not in SELECTOR_KEYS:
                raise SelectorError(
                    f"Unknown selector key {key!r}. Expected one of {', '.join(SELECTOR_KEYS)}."
                )
            if key in seen:
                raise SelectorError(f"Selector key {key!r} is given twice.")
            if not value:
                raise SelectorError(f"Selector key {key!r} has an empty value; use '*' for any.")
            seen[key] = value
        return cls(tuple(seen.items()))

    def get(self, key: str) -> str:
        """The glob for ``key`` (``*`` when not given)."""
        return dict(self.patterns).get(key, "*")

    def allows(self, name: str, value: str) -> bool:
        """Whether ``value`` of key ``name`` passes this selector's terms on ``name``."""
        return fnmatch.fnmatchcase(value, self.get(name))

    def matches(self, key: ReprKey) -> bool:
        """Whether a representation is selected."""
        values: Mapping[str, str] = key.as_dict()
        return all(self.allows(name, values[name]) for name, _ in self.patterns)

    def __str__(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.patterns) or "*"


def expand_layer_template(template: str, *, stem: str, key: str | None = None) -> str:
    """Fill ``{stem}`` / ``{key}`` in a ``--layer`` template (``layer_3.pt`` → ``layer_3``)."""
    try:
        name = template.format(stem=stem, key=key if key is not None else stem)
    except (KeyError, IndexError, ValueError) as err:
        raise InvalidNameError(
            f"Invalid --layer template {template!r}: only {{stem}} and {{key}} may be used."
        ) from err
    return validate_name(name, "layer")


def differ_match_filter(
    a: Mapping[str, str], b: Mapping[str, str], match: Iterable[str], differ: Iterable[str]
) -> bool:
    """True when ``a`` and ``b`` agree on every ``match`` key and differ on every ``differ`` key."""
    return all(a[k] == b[k] for k in match) and all(a[k] != b[k] for k in differ)


def parse_keys(text: str | None, option: str) -> tuple[str, ...]:
    """Parse ``--match`` / ``--differ`` values such as ``layer,checkpoint``."""
    if not text:
        return ()
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in keys if k not in SELECTOR_KEYS]
    if unknown:
        raise SelectorError(
            f"Unknown key {unknown[0]!r} in {option}. Expected some of {', '.join(SELECTOR_KEYS)}."
        )
    return keys
