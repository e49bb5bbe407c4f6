"""The measure registry: name → ``module:Class``, loaded on first use.

Adding a measure is one module in :mod:`reprstore.metrics` and one line here; the
command line (``--measure``, ``--measure help``), the result tables, the plots and the
generic property tests pick it up from this table.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Sequence
from typing import Any

from reprstore.errors import InputError
from reprstore.metrics.base import Measure, Spec

REGISTRY: dict[str, str] = {
    "cka": "reprstore.metrics.cka:CKA",
    "cca": "reprstore.metrics.cca:CCA",
    "svcca": "reprstore.metrics.svcca:SVCCA",
    "pwcca": "reprstore.metrics.pwcca:PWCCA",
    "procrustes": "reprstore.metrics.procrustes:Procrustes",
    "shape": "reprstore.metrics.shape:Shape",
    "linreg": "reprstore.metrics.linreg:LinReg",
    "rsa": "reprstore.metrics.rsa:RSA",
    "pca": "reprstore.metrics.pca:PCA",
    "cosine": "reprstore.metrics.cosine:Cosine",
    "pr": "reprstore.metrics.describe:ParticipationRatio",
    "erank": "reprstore.metrics.describe:EffectiveRank",
    "variance": "reprstore.metrics.describe:Variance",
    "sparsity": "reprstore.metrics.describe:Sparsity",
    "selectivity": "reprstore.metrics.describe:Selectivity",
    "attention_entropy": "reprstore.metrics.attention:AttentionEntropy",
    "head_specialization": "reprstore.metrics.attention:HeadSpecialization",
}
_LOADED: dict[str, Measure] = {}


def get(name: str) -> Measure:
    """The registered measure ``name``; an unknown name gets the closest ones."""
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise InputError(
            f"Unknown measure {name!r}.{hint} Expected one of {', '.join(REGISTRY)} "
            "(--measure help lists them)."
        )
    if name not in _LOADED:
        module, cls = REGISTRY[name].split(":")
        _LOADED[name] = getattr(importlib.import_module(module), cls)()
    return _LOADED[name]


def column_range(column: str) -> tuple[float, float] | None:
    """The interval a result column lies in by its measure's definition (``cka`` and a
    suffixed ``cka[kernel=rbf]`` alike), or None for an unbounded or unknown column."""
    base = column.split("[", 1)[0]
    for name in REGISTRY:
        for col, lo, hi in get(name).ranges:
            if col == base:
                return lo, hi
    return None


def column_title(column: str) -> str | None:
    """The axis title a measure declares for a result column (by its base name), if any."""
    base = column.split("[", 1)[0]
    for name in REGISTRY:
        for col, title in get(name).titles:
            if col == base:
                return title
    return None


def is_distance(column: str) -> bool:
    """Whether a result column is a distance (smaller means more alike), as its measure
    declares (``cka`` and a suffixed ``procrustes[…]`` alike)."""
    base = column.split("[", 1)[0]
    return any(base in get(name).distances for name in REGISTRY)


def measures() -> dict[str, str]:
    """Every registered measure: name → one line (what it is, its options)."""
    out = {}
    for name in REGISTRY:
        m = get(name)
        opts = ", ".join(f"{o.name}={o.default}" for o in m.options)
        kind = {"rows": "pair, same rows", "features": "pair, same width", "single": "describe"}
        out[name] = f"{m.summary} [{kind[m.pairing]}]" + (f" options: {opts}" if opts else "")
    return out


def help_text() -> str:
    """The text of ``--measure help``."""
    lines = ["Measures (NAME[:option=value…], comma-separated):"]
    width = max(12, *(len(name) for name in REGISTRY))
    lines += [f"  {name:<{width}} {line}" for name, line in measures().items()]
    return "\n".join(lines)


def _split(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",")]
    return [p for p in parts if p]


def parse_spec(text: str, defaults: dict[str, Any] | None = None) -> Spec:
    """One ``name[:opt=value…]`` (``svcca:keep=0.99``) as a :class:`Spec`.

    ``defaults`` supplies option values given elsewhere (``--estimator`` for ``cka``).
    """
    name, *rest = (t.strip() for t in text.split(":"))
    measure = get(name)
    known = {o.name: o for o in measure.options}
    values: dict[str, Any] = {o.name: o.default for o in measure.options}
    for key, value in (defaults or {}).items():
        if key in known:
            known[key].check(name, value)
            values[key] = value
    for item in rest:
        key, eq, value = item.partition("=")
        key = key.strip()
        if key not in known:
            close = difflib.get_close_matches(key, known, n=2, cutoff=0.5)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            expected = ", ".join(known) or "none"
            raise InputError(
                f"Unknown option {key!r} of measure {name}.{hint} Expected: {expected}."
            )
        if not eq:
            raise InputError(f"Option {name}:{key} needs a value ({name}:{key}=VALUE).")
        values[key] = known[key].parse(name, value.strip())
    return Spec(measure, tuple(values.items()))


def parse_measures(
    text: str | Sequence[str], defaults: dict[str, dict[str, Any]] | None = None
) -> list[Spec]:
    """Measures asked for (``"cka,cca,svcca:keep=0.99"``) as :class:`Spec` objects.

    A measure asked for twice with different options gets its later columns suffixed
    with ``[opt=value…]``; the same measure and options twice is asked for once.
    """
    items = _split(text) if isinstance(text, str) else [t for x in text for t in _split(x)]
    if not items:
        raise InputError("Give at least one measure (--measure NAME; --measure help lists them).")
    specs: list[Spec] = []
    seen: set[str] = set()
    for item in items:
        spec = parse_spec(item, (defaults or {}).get(item.split(":")[0].strip()))
        if spec.key in seen:
            continue
        if any(s.name == spec.name for s in specs):
            changed = [
                f"{k}={v}"
                for (k, v), (_, d) in zip(
                    spec.items, ((o.name, o.default) for o in spec.measure.options), strict=True
                )
                if v != d
            ]
            spec = Spec(spec.measure, spec.items, "[" + ",".join(changed or ["default"]) + "]")
        seen.add(spec.key)
        specs.append(spec)
    return specs
