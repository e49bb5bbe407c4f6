"""Layer selection and forward hooks.

:func:`select_layers` is the one place where names, globs or a callable become the list of
layers to record, with one clear error. :func:`hooked` registers forward hooks for a
block and removes every handle in its ``finally``, also when the block fails. A hook
hands the (first) output tensor on at once; nothing piles up here.

Patterns are dotted-path globs: ``*`` matches within one name (``encoder.layer.*`` is the
six blocks, not their submodules), ``**`` across names (``encoder.**.output``).

Besides module paths, a layer may name part of what the model *returns*: ``output`` (a
model that returns a tensor), ``output.1`` (the second element of a returned tuple) or a
field of a returned mapping / transformers ``ModelOutput`` (``last_hidden_state``,
``hidden_states.3``). TorchScript models run no Python hooks, so only these work there.

A module that returns a tuple hands on its first tensor; ``MODULE:N`` picks element ``N``
instead (``encoder.layer.*.attention.self:1``: the attention weights a transformers
self-attention returns beside its output, with eager attention). ``:`` never occurs in a
module path, so the suffix cannot be mistaken for a child module.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from reprstore.errors import InputError

LayerPatterns = str | Sequence[str] | Callable[[str], bool]
OnOutput = Callable[[str, torch.Tensor], None]


def parse_patterns(patterns: LayerPatterns) -> list[str] | Callable[[str], bool]:
    """Split ``"a.*,b"`` into patterns; lists and callables pass through."""
    if callable(patterns):
        return patterns
    if isinstance(patterns, str):
        patterns = patterns.split(",")
    out = [p.strip() for p in patterns if p.strip()]
    if not out:
        raise InputError("No layers given. Pass --layers NAME[,GLOB…]; see --list-layers.")
    return out


_ELEMENT = re.compile(r"^(.+):(\d+)$")


def split_element(name: str) -> tuple[str, int | None]:
    """``"mod:1"`` → ``("mod", 1)``: a module path and the element of its output tuple
    (``None``: the first tensor)."""
    found = _ELEMENT.match(name)
    return (found.group(1), int(found.group(2))) if found else (name, None)


def select_layers(patterns: LayerPatterns, available: Sequence[str]) -> list[str]:
    """The layers of ``available`` that ``patterns`` select, in ``available``'s order.

    A pattern ending in ``:N`` selects element ``N`` of the matched modules' outputs
    (the chosen name keeps the suffix).

    Parameters
    ----------
    patterns
        Comma-separated names/globs (``encoder.layer.*,pooler``), a list of them, or a
        predicate ``name -> bool``.
    available
        Every selectable name, in model order.

    Raises
    ------
    InputError
        When a pattern matches nothing; the message lists the closest real names.
    """
    parsed = parse_patterns(patterns)
    if callable(parsed):
        chosen = [name for name in available if parsed(name)]
        if not chosen:
            raise InputError("The layer predicate selected no layer. See --list-layers.")
        return chosen
    split = [split_element(p) for p in parsed]
    regexes = [(layer_glob(base), "" if i is None else f":{i}") for base, i in split]
    for (base, _), (regex, _) in zip(split, regexes, strict=True):
        if not any(regex.fullmatch(name) for name in available):
            raise InputError(_unknown_layer_message(base, available))
    chosen = [n + suffix for n in available for r, suffix in regexes if r.fullmatch(n)]
    return list(dict.fromkeys(chosen))


def is_glob(pattern: str) -> bool:
    """Whether a layer pattern has wildcards."""
    return any(c in pattern for c in "*?[")


def layer_glob(pattern: str) -> re.Pattern[str]:
    """A dotted-path glob: ``*`` and ``?`` stay inside one name component, ``**`` spans
    components (``encoder.layer.*`` selects ``encoder.layer.3``, not its submodules)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^.]*")
        elif c == "?":
            out.append("[^.]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def _unknown_layer_message(pattern: str, available: Sequence[str]) -> str:
    close = difflib.get_close_matches(pattern, list(available), n=5, cutoff=0.4)
    if not close:
        close = [n for n in available if "." not in n][:5] or list(available)[:5]
    return (
        f"No layer matches {pattern!r}. Closest names: {', '.join(close)}. "
        "Run with --list-layers to see them all."
    )


def module_names(model: nn.Module) -> list[str]:
    """Every hookable submodule path (the root excluded), in model order."""
    if isinstance(model, torch.jit.ScriptModule):
        return []
    return [name for name, _ in model.named_modules() if name]


def first_tensor(value: Any) -> torch.Tensor | None:
    """The first tensor in an output (tensor, tuple/list, mapping or ModelOutput)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for item in value:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def output_leaves(value: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Name every tensor a model returns: ``output``, ``output.0``, ``hidden_states.3`` …"""
    if isinstance(value, torch.Tensor):
        yield (prefix or "output"), value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from output_leaves(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from output_leaves(item, f"{prefix or 'output'}.{i}")


@contextmanager
def hooked(model: nn.Module, layers: Sequence[str], on_output: OnOutput) -> Iterator[None]:
    """Call ``on_output(layer, tensor)`` for every named module's output inside the block.

    The tensor is the module's output (its first tensor for tuples and ModelOutputs, or
    element ``N`` for a layer named ``MODULE:N``), detached. Every handle is removed when
    the block ends, however it ends.
    """
    modules = dict(model.named_modules())
    handles = []
    try:
        for name in layers:
            base, index = split_element(name)
            hook = _hook(name, on_output, index)
            handles.append(modules[base].register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def output_element(output: Any, index: int, name: str) -> torch.Tensor:
    """Element ``index`` of a module's output (a tuple, list, mapping or ModelOutput)."""
    items = list(output.values()) if isinstance(output, Mapping) else output
    if isinstance(items, torch.Tensor):
        items = (items,)
    if not isinstance(items, (tuple, list)) or index >= len(items):
        count = len(items) if isinstance(items, (tuple, list)) else 1
        raise InputError(
            f"Layer {name!r}: the module returns {count} output(s); there is no element "
            f"{index} (elements count from 0)."
        )
    item = items[index]
    if item is None:
        raise InputError(
            f"Layer {name!r}: element {index} of the module's output is None (attention "
            "weights are returned with eager attention only: extract --attentions)."
        )
    if not isinstance(item, torch.Tensor):
        raise InputError(f"Layer {name!r}: element {index} is a {type(item).__name__}.")
    return item


def _hook(name: str, on_output: OnOutput, index: int | None = None) -> Callable[..., None]:
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if index is not None:
            tensor: torch.Tensor | None = output_element(output, index, name)
        else:
            tensor = first_tensor(output)
        if tensor is None:
            raise InputError(f"Layer {name!r} returned no tensor ({type(output).__name__}).")
        on_output(name, tensor.detach())

    return hook
