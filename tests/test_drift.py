"""Weight drift from real checkpoint files of small torch models, against plain numpy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_user_error, run_cli
from safetensors.torch import save_file
from torch import nn

import reprstore
from reprstore.capture import weights
from reprstore.errors import InputError

STEPS = (0, 20, 100, 1000)


def small_model() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 3))


@pytest.fixture
def ckpts(tmp_path: Path) -> Path:
    """step0 … step1000 and final of one short 'training' run, saved as state dicts."""
    torch.manual_seed(0)
    model = small_model()
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for step in (*STEPS, None):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        model(torch.randn(8, 6))  # moves the BatchNorm running statistics
        name = "final" if step is None else f"step{step}"
        torch.save(model.state_dict(), folder / f"{name}.pt")
    return folder


def numpy_drift(path: Path, ref: Path) -> dict[str, tuple[float, float]]:
    """(cosine, relative change) per floating-point tensor and over all of them, in float64."""
    w = {k: v.double().numpy().ravel() for k, v in torch.load(path, weights_only=True).items()
         if v.is_floating_point()}  # fmt: skip
    r = {k: v.double().numpy().ravel() for k, v in torch.load(ref, weights_only=True).items()
         if v.is_floating_point()}  # fmt: skip
    w["(all)"] = np.concatenate([w[k] for k in r])
    r["(all)"] = np.concatenate(list(r.values()))
    out = {}
    for k in r:
        cos = np.dot(w[k], r[k]) / (np.linalg.norm(w[k]) * np.linalg.norm(r[k]))
        out[k] = (cos, np.linalg.norm(w[k] - r[k]) / np.linalg.norm(r[k]))
    return out


def test_drift_matches_numpy_per_tensor(ckpts: Path) -> None:
    df = reprstore.weight_drift([ckpts / "*.pt"], against="final")
    assert list(dict.fromkeys(df["checkpoint"])) == [*(f"step{s}" for s in STEPS), "final"]
    assert "1.num_batches_tracked" not in set(df["parameter"])  # integer buffer: left out
    for label in ("step0", "step100", "final"):
        want = numpy_drift(ckpts / f"{label}.pt", ckpts / "final.pt")
        got = df[df.checkpoint == label].set_index("parameter")
        assert set(got.index) == set(want)
        for name, (cos, rel) in want.items():
            assert got.loc[name, "cosine"] == pytest.approx(cos, rel=1e-12, abs=1e-15)
            assert got.loc[name, "rel_change"] == pytest.approx(rel, rel=1e-12, abs=1e-15)
    assert (df[df.checkpoint == "final"]["rel_change"] == 0).all()
    assert df.loc[df.checkpoint == "step100", "step"].iloc[0] == 100


def test_sliced_reading_and_safetensors_give_the_same_numbers(
    ckpts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = reprstore.weight_drift([ckpts / "step0.pt", ckpts / "final.pt"], against="final")
    first_is_ref = reprstore.weight_drift([ckpts / "step0.pt", ckpts / "final.pt"])
    state = torch.load(ckpts / "final.pt", weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, ckpts / "final.safetensors")
    monkeypatch.setattr(weights, "CHUNK", 5)  # every tensor read in slices of 5 values
    sliced = reprstore.weight_drift([ckpts / "step0.pt"], against=ckpts / "final.safetensors")
    first = whole[whole.checkpoint == "step0"].set_index("parameter")["rel_change"]
    assert sliced.set_index("parameter")["rel_change"][first.index].to_numpy() == pytest.approx(
        first.to_numpy(), rel=1e-12
    )
    assert (first_is_ref["reference"] == "step0").all()  # without --against: the first file


def test_tiny_changes_keep_their_digits(tmp_path: Path) -> None:
    ref = torch.randn(300, 40, dtype=torch.float64) + 100.0
    torch.save({"w": ref}, tmp_path / "a.pt")
    torch.save({"w": ref + 1e-9}, tmp_path / "b.pt")
    df = reprstore.weight_drift([tmp_path / "a.pt", tmp_path / "b.pt"])
    got = df[(df.checkpoint == "b") & (df.parameter == "w")]["rel_change"].item()
    r = ref.numpy()
    assert got == pytest.approx(np.linalg.norm(np.full_like(r, 1e-9)) / np.linalg.norm(r), rel=1e-6)


def test_zero_reference_tensor_is_stated_not_a_silent_number(tmp_path: Path) -> None:
    torch.save({"b": torch.zeros(4), "w": torch.ones(3)}, tmp_path / "a.pt")
    torch.save({"b": torch.ones(4), "w": torch.ones(3) * 2}, tmp_path / "b.pt")
    df = reprstore.weight_drift([tmp_path / "a.pt", tmp_path / "b.pt"])
    row = df[(df.checkpoint == "b") & (df.parameter == "b")].iloc[0]
    assert np.isnan(row.rel_change) and row.note == "reference is all zeros" and row.change == 2


def test_mismatched_checkpoints_are_refused(tmp_path: Path, ckpts: Path) -> None:
    torch.save({"0.weight": torch.zeros(12, 6)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="lacks 7 tensor"):
        reprstore.weight_drift([ckpts / "final.pt", tmp_path / "other.pt"])
    torch.save({**torch.load(ckpts / "final.pt"), "0.weight": torch.zeros(2, 2)}, tmp_path / "s.pt")
    with pytest.raises(InputError, match=r"0.weight has shape \(2, 2\)"):
        reprstore.weight_drift([ckpts / "final.pt", tmp_path / "s.pt"])
    with pytest.raises(InputError, match="matches --params"):
        reprstore.weight_drift([ckpts / "final.pt"], params="encoder.*")


def test_cli_drift_table_and_timeline(ckpts: Path) -> None:
    done = run_cli("drift", "--checkpoints", "ckpts/step*.pt", "--checkpoints", "ckpts/final.pt",
                   "--against", "final", "--out", "wd.csv", "--plot", "wd.png",
                   cwd=ckpts.parent)  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(ckpts.parent / "wd.csv")
    want = numpy_drift(ckpts / "step20.pt", ckpts / "final.pt")["(all)"]
    got = table[(table.checkpoint == "step20") & (table.parameter == "(all)")].iloc[0]
    assert (got.cosine, got.rel_change) == pytest.approx(want, rel=1e-12)
    assert (ckpts.parent / "wd.png").read_bytes().startswith(b"\x89PNG")
    from reprstore.analysis.results import Value
    from reprstore.report.figures import draw_timeline

    fig, _ = draw_timeline(table, Value("rel_change"), by=None, over="seed", x=None, band="ci",
                           level=0.95, final_step=2000, title=None)  # fmt: skip
    assert list(fig.axes[0].lines[0].get_xdata()) == [*STEPS, 2000]
    with pytest.raises(InputError, match="drift table plots as --kind timeline"):
        reprstore.plot_results(table, "heatmap", ckpts.parent / "h.png")


class Opaque:
    pass


def test_cli_bad_input_is_one_line(ckpts: Path, tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2), "obj": Opaque()}, tmp_path / "pickled.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    cases = [
        (["ckpts/final.pt", "ckpts/nope.pt"], "no such file"),
        (["--checkpoints", "ckpts/zz*.pt"], "no checkpoint file matches"),
        (["ckpts/final.pt", "--against", "step7"], "neither a checkpoint label"),
        ([str(tmp_path / "pickled.pt")], "weights_only=True"),
        ([str(tmp_path / "junk.pt")], "cannot load checkpoint junk.pt"),
        (["ckpts/final.pt", "--plot", "x.gif"], "expected a file name ending in .png"),
        ([], "give checkpoint files"),
    ]
    for args, needle in cases:
        assert_user_error(run_cli("drift", *args, cwd=ckpts.parent), needle)


# --- trust-v3: integer tensors, torch's warnings, one slice at a time ---


def test_integer_tensors_are_named_with_their_dtype(tmp_path: Path) -> None:
    """Integer buffers (position_ids, num_batches_tracked) are left out with a note; a tensor
    that is floating in the reference but an integer in a checkpoint is refused by name."""
    w, pos = torch.randn(4, 3), torch.arange(7)
    torch.save({"w": w, "position_ids": pos}, tmp_path / "base.pt")
    torch.save({"w": w + 0.5, "position_ids": pos}, tmp_path / "ft.pt")
    df = reprstore.weight_drift([tmp_path / "base.pt", tmp_path / "ft.pt"])
    assert set(df["parameter"]) == {"w", "(all)"}
    assert df.attrs["notes"] == [
        "skipped 1 tensor(s) of base that are not floating point: position_ids (int64); "
        "weight drift compares floating-point weights only"
    ]
    shown = run_cli("drift", "base.pt", "ft.pt", cwd=tmp_path)
    assert shown.returncode == 0 and "position_ids (int64)" in shown.stdout, shown.stderr
    torch.save({"w": w, "position_ids": pos.float()}, tmp_path / "float_pos.pt")
    bad = run_cli("drift", "float_pos.pt", "ft.pt", cwd=tmp_path)
    assert_user_error(bad, "Tensor position_ids is int64 in ft but float32 in the reference")
    assert "lacks" not in bad.stderr
    torch.save({"step": torch.tensor(3), "ids": torch.arange(2)}, tmp_path / "ints.pt")
    assert_user_error(run_cli("drift", "ints.pt", "ft.pt", cwd=tmp_path),
                      "holds no floating-point tensor", "step (int64)")  # fmt: skip
    assert_user_error(run_cli("drift", "base.pt", "ft.pt", "--params", "pos*", cwd=tmp_path),
                      "not floating point", "position_ids (int64)")  # fmt: skip


def test_safetensors_integer_tensors_are_named_too(tmp_path: Path) -> None:
    w = torch.randn(5, 2)
    save_file({"w": w, "position_ids": torch.arange(5)}, tmp_path / "a.safetensors")
    save_file({"w": w * 2, "position_ids": torch.arange(5)}, tmp_path / "b.safetensors")
    df = reprstore.weight_drift([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    assert "position_ids (int64)" in df.attrs["notes"][0]
    row = df[(df.checkpoint == "b") & (df.parameter == "w")].iloc[0]
    r = w.double().numpy().ravel()
    assert row.rel_change == pytest.approx(np.linalg.norm(2 * r - r) / np.linalg.norm(r), rel=1e-12)


def test_torch_warnings_do_not_precede_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TorchScript archive makes torch.load warn before it fails; a legacy pickle with a
    module in it fails: each is one line, with every warning shown (PYTHONWARNINGS)."""
    monkeypatch.setenv("PYTHONWARNINGS", "always")
    torch.save({"w": torch.ones(2, 2)}, tmp_path / "ok.pt")
    with warnings.catch_warnings():  # torch.jit is deprecated: not what is tested here
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(nn.Linear(2, 2)), tmp_path / "script.pt")
    torch.save({"w": nn.Linear(2, 2)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    (tmp_path / "text.pt").write_text("TOPSECRET: not a checkpoint\n")
    for name, needle in (("script.pt", "pickled Python objects"),
                         ("legacy.pt", "pickled Python objects"),
                         ("text.pt", "it holds text, not the output of torch.save")):  # fmt: skip
        result = run_cli("drift", "ok.pt", name, cwd=tmp_path)
        assert_user_error(result, name, needle)
        assert "Warning" not in result.stderr and "TOPSECRET" not in result.stderr
    imported = run_cli("import", "s.zarr", "script.pt", "--name", "m", "--layer", "l",
                       cwd=tmp_path)  # fmt: skip
    assert_user_error(imported, "script.pt", "pickled Python objects")
    assert not (tmp_path / "s.zarr").exists()


_MEMORY_SCRIPT = """
import json, os, resource, sys
from reprstore.workflows.drift import weight_drift

ref, cur, small_a, small_b = sys.argv[1:5]
weight_drift([small_a, small_b])  # warm up: imports, threads, allocator
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
base = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:  # VmHWM from here
    f.write("5")
# address space: what is mapped now, the two files (torch maps .pt files whole) and 256 MiB
limit = int(status("VmSize:") + os.path.getsize(ref) + os.path.getsize(cur) + 256 * 2**20)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
df = weight_drift([ref, cur])
rows = df[df.checkpoint != df.reference].set_index("parameter")
print(json.dumps({"base": base, "peak": status("VmHWM:"),
                  "cosine": rows["cosine"].to_dict(), "rel": rows["rel_change"].to_dict()}))
"""


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.slow
def test_drift_reads_one_slice_at_a_time_under_a_real_limit(tmp_path: Path, suffix: str) -> None:
    """Two 64 MiB tensors in a base and a fine-tuned file (128 MiB each): the pass adds well
    under one tensor's size to the peak resident memory (it was 384 MiB: every page of
    the memory-mapped tensors stayed resident, safetensors were read whole)."""
    n = 16 * 2**20  # float32: 64 MiB
    rng = np.random.default_rng(9)
    names, want, base, tuned = ("enc.weight", "dec.weight"), {}, {}, {}
    for name in names:
        r = rng.standard_normal(n, dtype=np.float32)
        w = r + np.float32(0.05) * rng.standard_normal(n, dtype=np.float32)
        r64, w64 = r.astype(np.float64), w.astype(np.float64)
        want[name] = (float(w64 @ r64 / (np.linalg.norm(w64) * np.linalg.norm(r64))),
                      float(np.linalg.norm(w64 - r64) / np.linalg.norm(r64)))  # fmt: skip
        base[name], tuned[name] = torch.from_numpy(r), torch.from_numpy(w)
        del r64, w64
    save = save_file if suffix == ".safetensors" else torch.save
    save(base, tmp_path / f"base{suffix}")
    save(tuned, tmp_path / f"tuned{suffix}")
    del base, tuned
    torch.save({"w": torch.ones(3)}, tmp_path / "a.pt")
    torch.save({"w": torch.ones(3) * 2}, tmp_path / "b.pt")
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    args = [str(tmp_path / f) for f in (f"base{suffix}", f"tuned{suffix}", "a.pt", "b.pt")]
    r = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, *args], capture_output=True,
                       text=True, env=env, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    both = 2 * n * 4  # both tensors of one file together: 128 MiB
    assert got["peak"] - got["base"] < both / 2, (got["peak"] - got["base"]) / 2**20
    for name, (cos, rel) in want.items():
        assert got["cosine"][name] == pytest.approx(cos, rel=1e-12)
        assert got["rel"][name] == pytest.approx(rel, rel=1e-9)
