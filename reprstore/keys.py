"""Names, keys and selectors: pure functions, no I/O.

A representation lives at ``reprs/<model>/<seed>/<checkpoint>/<dataset>/<layer>`` (store
format 2; format 1 had no ``<dataset>`` level) and a dataset at ``datasets/<dataset>``.
This module validates names, maps keys to store paths and back, sorts names in natural
order and parses selectors such as ``model=minilm,seed=*,layer=encoder.layer.*``.
"""

from __future__ import annotations

import fnmatch
import functools
import keyword
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

from reprstore.errors import InvalidNameError, SelectorError

REPRS = "reprs"
DATASETS = "datasets"
DEFAULT_DATASET = "default"
SELECTOR_KEYS = ("model", "seed", "checkpoint", "layer", "dataset")
#: names conditions read besides the key's fields: derived from the key, so a run
#: attribute of that name would be shadowed (``step`` is read off the checkpoint label)
DERIVED_KEYS = ("step",)
#: every name a condition (``--pair-where``) or selector reads from a representation
#: itself; run attributes may not take these names
CONDITION_KEYS = (*SELECTOR_KEYS, *DERIVED_KEYS)
_FORBIDDEN_CHARS = set("/\\,=*?[]\0\n\r\t")
#: keys zarr (v3 and v2) and reprstore's write leases use inside the store's folders
RESERVED_NAMES = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata",
                            "writer.lock"})  # fmt: skip
#: one path component; file systems allow 255 bytes, and a store path nests several
MAX_NAME_BYTES = 200


def nfc(text: str) -> str:
    """``text`` in Unicode normal form C: one spelling for names that print the same.

    ``café`` typed as one code point (NFC) or as ``e`` + a combining accent (NFD, what
    macOS file names and some editors give) is one name; every name a user or a file gives
    is normalised so, before it is validated, stored or matched.
    """
    return unicodedata.normalize("NFC", text) if isinstance(text, str) else text


def validate_name(value: str, what: str = "name") -> str:
    """Return ``value`` in NFC (:func:`nfc`) if it can be one path component, else raise.

    Names may not be empty, contain ``/`` or ``..``, start with ``__`` (reserved by zarr),
    or contain characters that selectors and shells treat specially (``, = * ? [ ]``).
    """
    return check_name(nfc(value), what)


def check_name(value: str, what: str = "name") -> str:
    """Return ``value`` unchanged if it can be one path component of the store, else raise.

    :func:`validate_name` without the normalisation: for names read back from a store,
    whose spelling is what finds their folder.
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


@functools.total_ordering
@dataclass(frozen=True)
class ReprKey:
    """Where one representation lives: run (model, seed, checkpoint) × dataset × layer.

    Keys sort in natural order, field by field (``layer_2`` before ``layer_10``).
    """

    model: str
    seed: str
    checkpoint: str
    dataset: str
    layer: str

    def __post_init__(self) -> None:
        for f in fields(self):  # a name given by a user or a file: validated, in NFC
            object.__setattr__(self, f.name, validate_name(getattr(self, f.name), f.name))

    @classmethod
    def stored(cls, *names: str) -> ReprKey:
        """The key of names listed from a store, spelled as stored (checked, not normalised).

        A store written before names were normalised may hold another spelling (NFD); the
        key keeps it so that its :attr:`path` finds the folder.
        """
        key = object.__new__(cls)
        for f, value in zip(fields(cls), names, strict=True):
            object.__setattr__(key, f.name, check_name(value, f.name))
        return key

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
        return cls.stored(*parts[1:])

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

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ReprKey):
            return NotImplemented
        return key_order(self) < key_order(other)


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


_STEP = re.compile(r"(?:step|iter|it|epoch|ckpt|checkpoint)[-_]?(\d+)", re.IGNORECASE)


def checkpoint_step(label: str) -> int | None:
    """The training step a checkpoint label names, for timelines on a true step axis.

    ``step1000``, ``step_1000``, ``epoch3``, ``ckpt-20`` and a bare ``328146`` give their
    number; a label with one number anywhere gives it (``run2``); ``final``, or several
    numbers without a ``step``-like word (``3-20``), give ``None``.
    """
    found = _STEP.findall(label)
    if len(found) == 1:
        return int(found[0])
    numbers = _NUMBER.findall(label)
    return int(numbers[0]) if len(numbers) == 1 and not found else None


def key_order(key: ReprKey) -> tuple[tuple[tuple[int, int | str], ...], ...]:
    """Natural sort key of a :class:`ReprKey`, field by field in the key's order."""
    return tuple(natural_key(getattr(key, f.name)) for f in fields(key))


def dataset_path(dataset: str) -> str:
    """The store path of a dataset group."""
    return f"{DATASETS}/{check_name(dataset, 'dataset')}"


ATTRIBUTE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # whole name: fullmatch
_SELECTOR_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GLOB_CHARS = set("*?[")
ATTRIBUTE_RULE = (
    "attribute names start with an ASCII letter, then letters, digits or '_', and are not "
    "a Python keyword, so that conditions can read them as a.<name>"
)


def validate_attribute_name(name: str) -> str:
    """A run attribute's name: one that conditions and selectors can read, and that no
    name they read from the key (:data:`CONDITION_KEYS`) would shadow.

    Conditions read ``a.<name>`` and refuse names starting with ``_``; a keyword
    (``a.if``) does not parse; ``step`` is read off the checkpoint label and would hide
    an attribute of that name.
    """
    name = nfc(name) if isinstance(name, str) else name
    if not isinstance(name, str) or not ATTRIBUTE_NAME.fullmatch(name) or keyword.iskeyword(name):
        raise InvalidNameError(f"Invalid attribute name {name!r}: {ATTRIBUTE_RULE} (e.g. 'tasks').")
    if name in SELECTOR_KEYS:
        raise InvalidNameError(
            f"Invalid attribute name {name!r}: it is a key field, which conditions and "
            "selectors read from the key itself; choose another name (e.g. 'base_model')."
        )
    if name in DERIVED_KEYS:
        raise InvalidNameError(
            f"Invalid attribute name {name!r}: conditions read {name!r} off the checkpoint "
            f"label (the training step), which would hide the attribute; choose another name "
            f"(e.g. 'train_{name}')."
        )
    return name


def _split_top(text: str) -> list[str]:
    """Split at commas outside ``{…}`` (``model={a,b},seed=0`` → two parts)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        if depth < 0:
            raise SelectorError(f"Selector {text!r} has a '}}' without its '{{'.")
    if depth:
        raise SelectorError(f"Selector {text!r} has a '{{' without its '}}'.")
    parts.append(text[start:])
    return parts


_TERM = re.compile(r"^\s*([^=!\s]+)\s*(!=|=)\s*(.*?)\s*$", re.S)


@dataclass(frozen=True)
class Term:
    """``key=alt|alt`` (any alternative matches) or ``key!=alt|alt`` (none matches)."""

    key: str
    negate: bool
    alternatives: tuple[str, ...]

    @classmethod
    def parse(cls, part: str) -> Term:
        found = _TERM.match(part)
        if found is None:
            raise SelectorError(
                f"Selector part {part.strip()!r} is not key=value. Expected e.g. "
                "'model=minilm,layer=encoder.layer.*', 'model=full|lora' or 'model!=base'."
            )
        key, op, value = found.groups()
        if key not in SELECTOR_KEYS and not _SELECTOR_KEY.match(key):
            raise SelectorError(
                f"Unknown selector key {key!r}. Expected one of {', '.join(SELECTOR_KEYS)} "
                "or a run attribute's name."
            )
        value = nfc(value)  # names match in NFC, whichever spelling either side has
        if value.startswith("{") and value.endswith("}"):
            alternatives = tuple(v.strip() for v in value[1:-1].split(","))
        else:
            alternatives = tuple(v.strip() for v in value.split("|"))
        if not value or any(not alt for alt in alternatives):
            raise SelectorError(
                f"Selector key {key!r} has an empty value in {part.strip()!r}; use '*' for any."
            )
        return cls(key, op == "!=", alternatives)

    def allows(self, value: str | None) -> bool:
        """Whether ``value`` passes (``None``: an attribute the run does not have); names
        compare in NFC, so a store spelling ``café`` decomposed (NFD) matches ``café``."""
        text = nfc(value) if value is not None else None
        hit = text is not None and any(fnmatch.fnmatchcase(text, a) for a in self.alternatives)
        return hit != self.negate

    @property
    def literals(self) -> tuple[str, ...]:
        """The alternatives without glob characters (names that must exist to match)."""
        return tuple(a for a in self.alternatives if not _GLOB_CHARS & set(a))

    def __str__(self) -> str:
        return f"{self.key}{'!=' if self.negate else '='}{'|'.join(self.alternatives)}"


@dataclass(frozen=True)
class Selector:
    """Globs over ``model, seed, checkpoint, layer, dataset`` and run attributes.

    ``key=glob`` selects, ``key=a|b`` or ``key={a,b}`` takes alternatives, ``key!=glob``
    excludes; terms are joined by commas and must all hold; a missing key means ``*``.
    """

    terms: tuple[Term, ...] = ()

    @classmethod
    def parse(cls, text: str | Selector | None) -> Selector:
        """Parse a selector; ``*``, empty or ``None`` selects everything."""
        if isinstance(text, Selector):
            return text
        if text is None or text.strip() in ("", "*"):
            return cls()
        terms: list[Term] = []
        for part in _split_top(text):
            if not part.strip():
                continue
            term = Term.parse(part)
            if any(t.key == term.key for t in terms):
                raise SelectorError(f"Selector key {term.key!r} is given twice.")
            terms.append(term)
        return cls(tuple(terms))

    def get(self, key: str) -> str:
        """The value text for ``key`` (``*`` when not given)."""
        return next((str(t).split("=", 1)[1] for t in self.terms if t.key == key), "*")

    @property
    def attribute_keys(self) -> tuple[str, ...]:
        """Keys that are run attributes, not fields of the key."""
        return tuple(t.key for t in self.terms if t.key not in SELECTOR_KEYS)

    def allows(self, name: str, value: str | None) -> bool:
        """Whether ``value`` of key ``name`` passes this selector's term on ``name``."""
        return all(t.allows(value) for t in self.terms if t.key == name)

    def matches(self, key: ReprKey, attributes: Mapping[str, str] | None = None) -> bool:
        """Whether a representation (with its run attributes) is selected."""
        values: Mapping[str, str] = {**(attributes or {}), **key.as_dict()}
        return all(t.allows(values.get(t.key)) for t in self.terms)

    def __str__(self) -> str:
        return ",".join(map(str, self.terms)) or "*"


def substitute_fields(template: str, values: Mapping[str, str], option: str) -> str:
    """Fill ``{name}`` fields of a user template from ``values``; nothing else is evaluated.

    ``{{`` and ``}}`` stand for literal braces. A field not in ``values`` (``{layer.x}``,
    ``{0}``, ``{stem!r}``) is refused with one line naming the fields allowed.
    """
    allowed = ", ".join("{" + k + "}" for k in values)

    def refuse(why: str) -> InvalidNameError:
        return InvalidNameError(
            f"Invalid {option} template {template!r}: {why}; only {allowed} may be used "
            "({{ and }} for literal braces)."
        )

    out, i = [], 0
    while i < len(template):
        ch, nxt = template[i], template[i + 1 : i + 2]
        if ch in "{}" and nxt == ch:
            out.append(ch)
            i += 2
        elif ch == "}":
            raise refuse("a '}' without its '{'")
        elif ch == "{":
            end = template.find("}", i)
            name = template[i + 1 : end] if end >= 0 else template[i + 1 :]
            if end < 0 or "{" in name:
                raise refuse("a '{' without its '}'")
            if name not in values:
                raise refuse(f"{{{name}}} is not a field")
            out.append(values[name])
            i = end + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def expand_layer_template(template: str, *, stem: str, key: str | None = None) -> str:
    """Fill ``{stem}`` / ``{key}`` in a ``--layer`` template (``layer_3.pt`` → ``layer_3``)."""
    values = {"stem": stem, "key": key if key is not None else stem}
    return validate_name(substitute_fields(template, values, "--layer"), "layer")


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
