"""Model sources, checkpoints and devices.

A model SPEC is one of

* ``package.module:callable`` — a function returning an ``nn.Module`` (the current
  directory is importable, as with ``python -m``);
* a TorchScript file (``torch.jit.save``);
* ``hf:DIR`` — a local transformers model directory, loaded offline
  (``local_files_only``); nothing is downloaded.

``--checkpoint`` files are state_dicts loaded with ``weights_only=True``; a checkpoint that
needs arbitrary unpickling is refused unless the user trusts it.
"""

from __future__ import annotations

import glob
import importlib
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reprstore.errors import InputError

_CALLABLE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_GLOB_CHARS = set("*?[")
_TOKENIZER_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "tokenizer.model",
    "sentencepiece.bpe.model",
)  # fmt: skip


@dataclass
class LoadedModel:
    """A model ready to run: the module, how it was made, and its tokenizer directory."""

    module: nn.Module
    spec: str
    kind: str  # callable | torchscript | hf
    hf_dir: Path | None = None

    @property
    def is_script(self) -> bool:
        return isinstance(self.module, torch.jit.ScriptModule)


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint file and its label (``step1000.pt`` → ``step1000``)."""

    label: str
    path: Path | None


def parse_device(spec: str) -> torch.device:
    """A usable ``torch.device``; :class:`InputError` for unknown or unavailable ones."""
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError) as err:
        raise InputError(f"Unknown --device {spec!r}: expected cpu, cuda, cuda:N or mps.") from err
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"--device {spec}: CUDA is not available here. Use --device cpu.")
        if device.index is not None and device.index >= count:
            raise InputError(f"--device {spec}: only {count} CUDA device(s) (0..{count - 1}).")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {spec}: MPS is not available here. Use --device cpu.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"--device {spec}: unsupported device type {device.type!r}.")
    return device


def load_model(spec: str, *, eager_attention: bool = False) -> LoadedModel:
    """Build the model a SPEC names, in eval mode on the CPU (see the module docstring).

    ``eager_attention``: an ``hf:`` model computes attention explicitly
    (``attn_implementation="eager"``), the one implementation that returns the attention
    probabilities (sdpa and flash attention return none).
    """
    if spec.startswith("hf:"):
        return _load_hf(spec, eager_attention)
    if _CALLABLE_SPEC.match(spec) and not Path(spec).exists():
        module = import_callable(spec, "model")()
        if not isinstance(module, nn.Module):
            raise InputError(
                f"Model spec {spec} returned {type(module).__name__}; expected a torch nn.Module."
            )
        return LoadedModel(module.eval(), spec, "callable")
    path = Path(spec)
    if path.is_file():
        return LoadedModel(_load_torchscript(path), spec, "torchscript")
    raise InputError(
        f"Cannot use model spec {spec!r}: expected package.module:callable, a TorchScript "
        "file or hf:DIR (a local transformers model directory)."
    )


def import_callable(spec: str, what: str) -> Any:
    """The callable ``package.module:name`` (the current directory is importable)."""
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:
        raise InputError(
            f"Cannot import {what} spec {spec}: {type(err).__name__}: {err}. "
            "Check the module is on PYTHONPATH (or in the current directory)."
        ) from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"Cannot import {what} spec {spec}: {module_name} has no {attr!r}.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"{what.capitalize()} spec {spec} is not callable.")
    return obj


def _load_torchscript(path: Path) -> nn.Module:
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:
        raise InputError(
            f"{path.name} is not a TorchScript file ({str(err).splitlines()[0][:120]}). "
            "A state_dict goes to --checkpoint, with --model package.module:callable."
        ) from err
    return module.eval()


def _load_hf(spec: str, eager_attention: bool = False) -> LoadedModel:
    directory = Path(spec[3:]).expanduser()
    if not (directory / "config.json").is_file():
        raise InputError(
            f"{spec}: {directory} is not a local transformers model directory (no config.json). "
            "Nothing is downloaded; give the directory the model was saved to."
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoModel
    except ImportError as err:
        raise InputError("hf: models need transformers: pip install 'reprstore[hf]'.") from err
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # our own progress bar is the only one
    try:
        kwargs: dict[str, Any] = {"attn_implementation": "eager"} if eager_attention else {}
        module = AutoModel.from_pretrained(str(directory), local_files_only=True, **kwargs)
    except Exception as err:  # OSError, ValueError, and pickle's UnpicklingError
        text = str(err)
        if "weights_only" in text or "Unpickl" in type(err).__name__:
            raise InputError(
                f"Cannot load {spec}: its weights file is a pickle that needs code to load "
                "(refused: weights are loaded with weights_only=True). Save the model with "
                "safetensors (save_pretrained(..., safe_serialization=True))."
            ) from None
        first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
        raise InputError(f"Cannot load {spec}: {first}") from None
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    return LoadedModel(module.eval(), spec, "hf", hf_dir=directory)


def load_tokenizer(model: LoadedModel) -> Any:
    """The tokenizer saved with an ``hf:`` model (for text data)."""
    if model.hf_dir is None:
        raise InputError(
            f"Text data needs a tokenizer: use an hf:DIR model (got {model.spec}), or give "
            "tokenized tensors (.npz with input_ids, attention_mask) as --data."
        )
    from transformers import AutoTokenizer

    hint = "save the tokenizer to that directory (tokenizer.save_pretrained)"
    if not any((model.hf_dir / name).is_file() for name in _TOKENIZER_FILES):
        raise InputError(f"{model.spec} has no tokenizer files; {hint}.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model.hf_dir), local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        raise InputError(
            f"{model.spec} has no usable tokenizer ({str(err).splitlines()[0][:120]}); {hint}."
        ) from err
    if len(tokenizer) < 10:  # transformers builds an empty one when the vocabulary is missing
        raise InputError(f"{model.spec}: the tokenizer has no vocabulary; {hint}.")
    return tokenizer


# -- checkpoints ---------------------------------------------------------------------
def expand_checkpoints(values: list[str] | None, label: str | None = None) -> list[Checkpoint]:
    """Checkpoint files from paths and globs, labelled by file stem (or ``label``).

    No value gives one run labelled ``label`` or ``final`` with the model as built.
    """
    if not values:
        return [Checkpoint(label or "final", None)]
    paths = checkpoint_paths(values)
    if label is not None and len(paths) > 1:
        raise InputError(
            f"--checkpoint-label names one checkpoint, but {len(paths)} checkpoint files were "
            "given; leave it out to label each by its file name."
        )
    labels = [label] if label is not None else [file_label(p) for p in paths]
    check_unique_labels(labels, paths)
    return [Checkpoint(lab, p) for lab, p in zip(labels, paths, strict=True)]


def check_unique_labels(labels: list[str], paths: list[Path], hint: str = "") -> None:
    """Refuse two files with one label, naming the first such label and its files."""
    seen: dict[str, Path] = {}
    for lab, path in zip(labels, paths, strict=True):
        if lab in seen:
            same = sum(x == lab for x in labels)
            raise InputError(
                f"{same} checkpoint files have the same label {lab!r} ({seen[lab]}, {path}"
                f"{' …' if same > 2 else ''}){hint}."
            )
        seen[lab] = path


def checkpoint_paths(values: list[str]) -> list[Path]:
    """The files that paths and globs name, each glob in natural order."""
    paths: list[Path] = []
    for value in values:
        if _GLOB_CHARS & set(value):
            found = sorted(glob.glob(value), key=_natural_key)
            if not found:
                raise InputError(f"--checkpoint {value!r} matches no file.")
            paths.extend(Path(p) for p in found)
        else:
            path = Path(value)
            if not path.is_file():
                raise InputError(f"--checkpoint {value}: no such file.")
            paths.append(path)
    return paths


def file_label(path: Path) -> str:
    """A checkpoint's label: its file name without the checkpoint suffix."""
    name = path.name
    for suffix in (".safetensors", ".pth", ".pt", ".ckpt", ".bin"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _natural_key(text: str) -> list[Any]:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", text)]


def read_state_dict(path: Path, *, trust: bool = False) -> dict[str, torch.Tensor]:
    """The state_dict in a checkpoint file (``weights_only`` unless ``trust``)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = _quiet_load(path, trust, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise _checkpoint_error(path, err, trust) from err
        try:  # a legacy (non-zip) file: it cannot be memory-mapped
            obj = _quiet_load(path, trust, mmap=False)
        except Exception as err:
            raise _checkpoint_error(path, err, trust) from err
    except Exception as err:
        raise _checkpoint_error(path, err, trust) from err
    return _unwrap_state_dict(path, obj)


def _quiet_load(path: Path, trust: bool, *, mmap: bool) -> Any:
    """``torch.load`` without torch's warnings (TorchScript archives, legacy formats): a
    file that cannot be used gets one error line, not a warning before it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=not trust, mmap=mmap)


def _checkpoint_error(path: Path, err: Exception, trust: bool) -> InputError:
    """One line for a checkpoint torch cannot load; never torch's message, which may quote
    the file's bytes (and under weights_only=True wraps every failure the same way)."""
    from reprstore.sources.files import content_kind, starts_like

    if not starts_like(path, ".pt"):
        what = f"it holds {content_kind(path)}, not the output of torch.save"
        return InputError(f"Cannot load checkpoint {path.name}: {what}.")
    text = str(err)
    if not trust and ("weights_only" in text or "weights only" in text.lower()):
        return InputError(
            f"Checkpoint {path.name} holds pickled Python objects and cannot be loaded with "
            "weights_only=True. Pass --trust-checkpoint only if you trust its source."
        )
    return InputError(
        f"Cannot load checkpoint {path.name}: it is damaged or cut short "
        f"({type(err).__name__}); save or copy it again."
    )


def _unwrap_state_dict(path: Path, obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                inner = inner.state_dict()
            if isinstance(inner, dict) and inner:
                obj = inner
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"Checkpoint {path.name} is not a state_dict (name → tensor).")
    return obj


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """Raise :class:`InputError` unless ``state`` has exactly the model's keys and shapes."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    problems = []
    if missing:
        problems.append(f"missing {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {_few(unexpected)}")
    if shapes:
        k = shapes[0]
        problems.append(f"shape of {k}: expected {expected[k]}, got {got[k]} ({len(shapes)} keys)")
    if problems:
        raise InputError(f"Checkpoint {name} does not fit the model: {'; '.join(problems)}.")


def _few(keys: list[str]) -> str:
    shown = ", ".join(keys[:3])
    return f"{shown} (+{len(keys) - 3} more)" if len(keys) > 3 else shown


def load_checkpoint(model: nn.Module, checkpoint: Checkpoint, *, trust: bool = False) -> None:
    """Load ``checkpoint`` into ``model`` (strict: every key must fit)."""
    if checkpoint.path is None:
        return
    state = read_state_dict(checkpoint.path, trust=trust)
    state = _strip_prefix(model, state)
    check_state_dict(model, state, checkpoint.path.name)
    model.load_state_dict(state, strict=True)


def validate_checkpoint(model: nn.Module, checkpoint: Checkpoint, *, trust: bool = False) -> None:
    """Check a checkpoint loads and fits, without loading it into the model."""
    if checkpoint.path is not None:
        state = _strip_prefix(model, read_state_dict(checkpoint.path, trust=trust))
        check_state_dict(model, state, checkpoint.path.name)


def _strip_prefix(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix DataParallel/DDP adds, when the model has none."""
    keys = list(state)
    wrapped = bool(keys) and all(k.startswith("module.") for k in keys)
    if wrapped and not any(k.startswith("module.") for k in model.state_dict()):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 of the model's parameters and buffers (names, dtypes, shapes, bytes)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():  # the tensor's own bytes, hashed in place (no copy)
            digest.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()
