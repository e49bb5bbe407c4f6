"""Names, keys and selectors: pure functions, no I/O.

A representation lives at ``reprs/<model>/<seed>/<checkpoint>/<layer>`` and a dataset at
``datasets/<dataset>``. This module validates names, maps keys to store paths and back,
and parses selectors such as ``model=minilm,seed=*,layer=encoder.layer.*``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

from reprstore.errors import InvalidNameError, SelectorError

REPRS = "reprs"
DATASETS = "datasets"
SELECTOR_KEYS = ("model", "seed", "checkpoint", "layer", "dataset")
_FORBIDDEN_CHARS = set("/\\,=*?[]\0\n\r\t")
#: keys zarr (v3 and v2) and reprstore's write leases use inside the store's folders
RESERVED_NAMES = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata",
                            "writer.lock"})  # fmt: skip
#: one path component; file systems allow 255 bytes, and a store path nests several
MAX_NAME_BYTES = 200


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
    if value in RESERVED_NAMES or value.startswith("."):
        raise InvalidNameError(
            f"Invalid {what} {value!r}: the name is reserved by the store format "
            "(zarr metadata, locks, hidden folders); choose another."
        )
    size = len(value.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise InvalidNameError(
            f"Invalid {what} {value[:20]!r}… ({len(value)} characters): names may have at most "
            f"{MAX_NAME_BYTES} characters (bytes in UTF-8); choose a shorter one."
        )
    if value != value.strip():
        raise InvalidNameError(f"Invalid {what} {value!r}: remove leading/trailing spaces.")
    return value


@dataclass(frozen=True, order=True)
class ReprKey:
    """Where one representation lives: run (model, seed, checkpoint) × layer."""

    model: str
    seed: str
    checkpoint: str
    layer: str

    def __post_init__(self) -> None:
        for f in fields(self):
            validate_name(getattr(self, f.name), f.name)

    @property
    def path(self) -> str:
        """The store path ``reprs/<model>/<seed>/<checkpoint>/<layer>``."""
        return "/".join((REPRS, self.model, self.seed, self.checkpoint, self.layer))

    @classmethod
    def from_path(cls, path: str) -> ReprKey:
        """Inverse of :attr:`path`."""
        parts = path.strip("/").split("/")
        if len(parts) != 5 or parts[0] != REPRS:
            raise InvalidNameError(
                f"Expected a path reprs/<model>/<seed>/<checkpoint>/<layer>. Got {path!r} instead."
            )
        return cls(*parts[1:])

    def label(self) -> str:
        """Short human label ``model/seed/checkpoint:layer``."""
        return f"{self.model}/{self.seed}/{self.checkpoint}:{self.layer}"

    def as_dict(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


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

    def matches(self, key: ReprKey, dataset: str | None = None) -> bool:
        """Whether a representation (and its dataset) is selected."""
        values: Mapping[str, str | None] = {**key.as_dict(), "dataset": dataset}
        for name, pattern in self.patterns:
            value = values[name]
            if value is None or not fnmatch.fnmatchcase(value, pattern):
                return False
        return True

    def __str__(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.patterns) or "*"


def expand_layer_template(template: str, *, stem: str, key: str | None = None) -> str:
    """Fill ``{stem}`` / ``{key}`` in a ``--layer`` template (``layer_3.pt`` → ``layer_3``).

    Only the bare fields ``{stem}`` and ``{key}`` are filled: no attribute or index access,
    conversion or format spec (``{stem.__class__}`` is refused, never evaluated).
    """
    import string

    values = {"stem": stem, "key": key if key is not None else stem}
    refusal = InvalidNameError(
        f"Invalid --layer template {template!r}: only {{stem}} and {{key}} may be used "
        "(no attributes, indexes, conversions or format specs)."
    )
    out = []
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:
        raise refusal from None
    for literal, field, spec, conversion in parts:
        out.append(literal)
        if field is None:
            continue
        if field not in values or spec or conversion:
            raise refusal
        out.append(values[field])
    return validate_name("".join(out), "layer")


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
