"""Options are frozen objects checked once, when made, before any store is opened or any
data read; the command line and the Python API build the same object."""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_user_error, run_cli

import reprstore
from reprstore.engine.options import ComputeOptions
from reprstore.errors import ReprstoreError
from reprstore.workflows.compare_options import CompareOptions
from reprstore.workflows.extract_options import ExtractOptions

BAD = [
    (dict(memory="lots"), "Invalid memory limit"),
    (dict(memory=0), "memory limit must be positive"),
    (dict(route="sideways"), "Unknown route"),
    (dict(precision="float16"), "Unknown precision"),
    (dict(device="tpu"), "Unknown device"),
    (dict(workers=0), "--workers must be at least 1"),
    (dict(workers=2, scheduler="tcp://127.0.0.1:1"), "not both"),
    (dict(scheduler="nowhere"), "--scheduler 'nowhere'"),
    (dict(timeout=-1), "--timeout"),
    (dict(split_every=1), "split_every"),
    (dict(cache=False, refresh=True), "--refresh"),
    (dict(estimator="unbiased"), "Unknown estimator"),
    (dict(kernel="poly"), "Unknown kernel"),
    (dict(shuffle=-1), "--shuffle"),
    (dict(measures="cka,nope"), "Unknown measure"),
    (dict(measures="pr"), "describe"),
    (dict(match="layr"), "Unknown key 'layr'"),
    (dict(where="label ==="), "Invalid --where"),
    (dict(pair_where="a.seed <"), "Invalid --pair-where"),
    (dict(ci=1.5), "--ci"),
    (dict(bootstrap=10), "--bootstrap needs --ci"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD)
def test_bad_options_are_refused_before_the_store_is_opened(
    tmp_path: Path, kwargs: dict, message: str
) -> None:
    """The store does not exist: an error about it would mean the options came later."""
    with pytest.raises(ReprstoreError, match=message) as err:
        reprstore.compare(tmp_path / "missing.zarr", "*", "*", **kwargs)
    assert "No store at" not in str(err.value)


def test_the_request_is_frozen_and_memory_is_parsed_once() -> None:
    request = CompareOptions.make("seed=0", "seed=1", memory="512MiB", match="layer,seed")
    assert request.compute.budget == 512 * 1024**2
    assert request.selection.match == ("layer", "seed")
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.compute.memory = "1GB"  # type: ignore[misc]
    assert ComputeOptions(memory=3 * 1024**3).provenance()["memory"] == 3 * 1024**3


# -- extraction ------------------------------------------------------------------------------
#: a model that fails loudly when built: every bad option below must be refused before it
NEVER = "models_for_tests:must_not_load"

BAD_EXTRACT = [
    (dict(reduce="median"), "Unknown --reduce 'median'"),
    (dict(layer_name="{layer}.{x}"), "Invalid --layer-name template"),
    (dict(dtype="int4"), "Unknown storage dtype 'int4'"),
    (dict(keep_bits=99), "--keep-bits 99 is out of range"),
    (dict(name="a/b"), "Invalid model name"),
    (dict(seed=""), "Invalid seed"),
    (dict(dataset="__x"), "Invalid dataset"),
    (dict(checkpoint_label="zarr.json"), "Invalid checkpoint label"),
    (dict(batch_size=0), "--batch-size must be at least 1"),
    (dict(on_nonfinite="panic"), "Unknown --on-nonfinite"),
    (dict(device="tpu9"), "Unknown --device 'tpu9'"),
    (dict(device="cuda:99"), "--device cuda:99"),
    (dict(autocast="fp16"), "Unknown --autocast 'fp16'"),
    (dict(threads=0), "--threads must be at least 1"),
    (dict(max_length=0), "--max-length must be at least 1"),
    (dict(queue_size=0), "queue_size must be at least 1"),
    (dict(layers=" , "), "No layers given"),
    (dict(checkpoint="nowhere/step*.pt"), "matches no file"),
    (dict(checkpoint="nowhere.pt"), "--checkpoint nowhere.pt: no such file"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_EXTRACT)
def test_bad_extract_options_are_refused_before_the_model_is_loaded(
    tmp_path: Path, kwargs: dict, message: str
) -> None:
    """The model spec fails loudly when built, and the store must not be created."""
    store = tmp_path / "never.zarr"
    settings = dict(model=NEVER, data=str(tmp_path / "x.npy"), layers="0", name="m")
    with pytest.raises(ReprstoreError, match=re.escape(message)) as err:  # InvalidNameError: names
        reprstore.extract(store, **{**settings, **kwargs})
    assert "\n" not in str(err.value)
    assert not store.exists()
    with pytest.raises(ReprstoreError, match=re.escape(message)):  # the object checks itself
        ExtractOptions(**{**settings, **kwargs})


def test_the_model_of_the_bad_options_table_fails_loudly_when_built(tmp_path: Path) -> None:
    """Good options reach the model: an error from the table above came before it."""
    with pytest.raises(RuntimeError, match="must_not_load was built"):
        reprstore.extract(tmp_path / "s.zarr", model=NEVER, data="x.npy", layers="0", name="m")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--reduce", "median"], "Unknown --reduce 'median'"),
        (["--layers", " , "], "No layers given"),
        (["--name", "a/b"], "Invalid model name"),
    ],
)
def test_bad_extract_options_on_the_command_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    store = tmp_path / "never.zarr"
    base = {"--model": NEVER, "--data": str(tmp_path / "x.npy"), "--layers": "0", "--name": "m"}
    base.update(zip(args[::2], args[1::2], strict=True))
    res = run_cli("extract", str(store), *[x for kv in base.items() for x in kv])
    assert_user_error(res, message)
    assert not store.exists()


def test_extract_options_are_frozen_in_nfc_and_keep_what_they_parsed(tmp_path: Path) -> None:
    def nfd(text: str) -> str:
        return unicodedata.normalize("NFD", text)

    for step in (10, 2):
        (tmp_path / f"step{step}.pt").write_bytes(b"")
    options = ExtractOptions(
        model=NEVER, data=tmp_path / "x.npy", layers="a.*, b", name=nfd("café"),  # type: ignore[arg-type]
        seed=nfd("sé"), dataset=nfd("jeu-été"), checkpoint=str(tmp_path / "step*.pt"),  # type: ignore[arg-type]
        dtype="bfloat16", keep_bits=5,
    )  # fmt: skip
    assert (options.name, options.seed, options.dataset) == ("café", "sé", "jeu-été")
    assert options.name != nfd("café")
    assert options.layers == ("a.*", "b") and options.data == str(tmp_path / "x.npy")
    assert options.checkpoint == (str(tmp_path / "step*.pt"),)
    assert [c.label for c in options.checkpoints] == ["step2", "step10"]  # natural order
    assert (options.encoding.name, options.encoding.keep_bits) == ("bfloat16", 5)
    assert options.torch_device.type == "cpu"
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.encoding = None  # type: ignore[misc]
    label = ExtractOptions(model=NEVER, data="x.npy", layers=("0",), name="m",
                           checkpoint_label=nfd("fin-é"))  # fmt: skip
    assert [c.label for c in label.checkpoints] == ["fin-é"] == [label.checkpoint_label]


def test_extract_takes_options_or_keywords_not_both(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((6, 8), np.float32))
    options = ExtractOptions(model="models_for_tests:mlp", data=str(tmp_path / "x.npy"),
                             layers=("1",), name="m")  # fmt: skip
    store = tmp_path / "s.zarr"
    with pytest.raises(TypeError, match=r"not both .*seed"):
        reprstore.extract(store, options=options, seed="1")
    with pytest.raises(TypeError, match=r"missing .*layers, name"):
        reprstore.extract(store, model=NEVER, data="x.npy")
    assert not store.exists()
    result = reprstore.extract(store, options=options)
    assert [k.label() for k in result.written] == ["m/0/final:1"]
    assert reprstore.extract(store, options=options).skipped == result.written
