"""Options are frozen objects checked once, when made, before any store is opened or any
data read; the command line and the Python API build the same object."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import reprstore
from reprstore.engine.options import ComputeOptions
from reprstore.errors import ReprstoreError
from reprstore.workflows.compare_options import CompareOptions

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
