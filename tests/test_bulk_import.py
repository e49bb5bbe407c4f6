"""Bulk import from a path template: a nested dump folder in one command, validated first."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import assert_user_error, run_cli, store_digest

from reprstore.errors import InputError
from reprstore.sources.templates import PathTemplate, is_template
from reprstore.store import Store
from reprstore.workflows.bulk import dry_run, import_tree

MODELS, SEEDS, STEPS, LAYERS = ("bert_base", "gpt"), ("0", "1"), ("20", "100"), ("2", "10")
TEMPLATE = "runs/{model}_seed{seed}/step_{checkpoint}/layer_{layer}.pt"
N, T, D = 24, 5, 6


def token_dump(model: str, seed: str, step: str, layer: str) -> np.ndarray:
    """The (N, T, D) float32 dump of one run × layer, reproducible from its key."""
    code = [MODELS.index(model), int(seed), int(step), int(layer)]
    return np.random.default_rng(code).normal(size=(N, T, D)).astype(np.float32)


@pytest.fixture
def dumps(tmp_path: Path) -> Path:
    """runs/<model>_seed<seed>/step_<step>/layer_<l>.pt (torch tensors), plus metadata."""
    import torch

    for model, seed, step, layer in itertools.product(MODELS, SEEDS, STEPS, LAYERS):
        folder = tmp_path / "runs" / f"{model}_seed{seed}" / f"step_{step}"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(torch.from_numpy(token_dump(model, seed, step, layer)),
                   folder / f"layer_{layer}.pt")  # fmt: skip
    for model, seed in itertools.product(MODELS, SEEDS):
        tasks = ["sst2", "mnli"] if model == "gpt" else ["qqp"]
        meta = {"tasks": tasks, "lr": 0.001, "seed_note": f"s{seed}"}
        (tmp_path / "runs" / f"{model}_seed{seed}" / "metadata.json").write_text(json.dumps(meta))
    (tmp_path / "runs" / "README.txt").write_text("not a dump")
    return tmp_path


def stored(store: Path, path: str) -> np.ndarray:
    return zarr.open_group(str(store), mode="r")[path][:]


def test_template_import_of_a_nested_folder_in_one_process(dumps: Path) -> None:
    result = run_cli("import", "s.zarr", TEMPLATE, "--reduce", "mean", "--dtype", "float32",
                     cwd=dumps)  # fmt: skip
    assert result.returncode == 0, result.stderr
    root = zarr.open_group(str(dumps / "s.zarr"), mode="r")
    found = set()
    for model in root["reprs"].group_keys():
        for seed in root[f"reprs/{model}"].group_keys():
            for step in root[f"reprs/{model}/{seed}"].group_keys():
                group = root[f"reprs/{model}/{seed}/{step}"]
                found |= {(model, seed, step, path) for path in _arrays_below(group)}
    expected = itertools.product(MODELS, SEEDS, STEPS, LAYERS)
    assert {(m, s, c) for m, s, c, _ in found} == {(m, s, c) for m, s, c, _ in expected}
    assert len(found) == len(MODELS) * len(SEEDS) * len(STEPS) * len(LAYERS)
    for model, seed, step, path in found:
        layer = path.rsplit("/", 1)[-1]
        want = token_dump(model, seed, step, layer).astype(np.float64).mean(axis=1)
        got = stored(dumps / "s.zarr", f"reprs/{model}/{seed}/{step}/{path}")
        np.testing.assert_allclose(got, want.astype(np.float32), rtol=0, atol=0)
        attrs = root[f"reprs/{model}/{seed}/{step}/{path}"].attrs
        assert attrs["reduction"] == "mean" and attrs["original_shape"] == [T, D]
    store = Store.open(dumps / "s.zarr")
    for info in store.select(None):  # metadata.json → run attributes, lists as sets
        model, seed = info.key.model, info.key.seed
        tasks = "sst2,mnli" if model == "gpt" else "qqp"
        want = {"tasks": tasks, "lr": "0.001", "seed_note": f"s{seed}"}
        assert store.attributes(info.key) == want


def _arrays_below(group: zarr.Group, prefix: str = "") -> list[str]:
    """Array paths below a checkpoint group: ``layer`` or ``dataset/layer``, either layout."""
    out = [f"{prefix}{name}" for name in group.array_keys()]
    for name in group.group_keys():
        out += _arrays_below(group[name], f"{prefix}{name}/")
    return out


def test_running_the_same_import_again_writes_nothing(dumps: Path) -> None:
    import_tree(dumps / "s.zarr", str(dumps / TEMPLATE), reduce="first")
    before = store_digest(dumps / "s.zarr")
    plan = import_tree(dumps / "s.zarr", str(dumps / TEMPLATE), reduce="first")
    assert not plan.to_write and len(plan.entries) == 16
    assert store_digest(dumps / "s.zarr") == before


def test_dry_run_lists_every_file_and_writes_nothing(dumps: Path) -> None:
    result = run_cli("import", "s.zarr", TEMPLATE, "--reduce", "max", "--dry-run", cwd=dumps)
    assert result.returncode == 0, result.stderr
    assert not (dumps / "s.zarr").exists()
    for model, seed, step, layer in itertools.product(MODELS, SEEDS, STEPS, LAYERS):
        assert f"runs/{model}_seed{seed}/step_{step}/layer_{layer}.pt" in result.stdout
    assert "16 of 16 file(s) to import" in result.stdout and "nothing written" in result.stdout
    assert "tasks=sst2,mnli" in result.stdout  # gpt's metadata.json
    import_tree(dumps / "s.zarr", str(dumps / TEMPLATE), reduce="max")
    before = store_digest(dumps / "s.zarr")
    plan = dry_run(dumps / "s.zarr", str(dumps / TEMPLATE), reduce="max")
    assert [e.action for e in plan.entries] == ["skip"] * 16
    assert store_digest(dumps / "s.zarr") == before


@pytest.mark.parametrize("how", ["mean", "first", "last", "max", "flatten"])
def test_reductions_of_token_dumps(tmp_path: Path, how: str) -> None:
    x = np.random.default_rng(3).normal(size=(10, 4, 3))
    (tmp_path / "d" / "m").mkdir(parents=True)
    np.save(tmp_path / "d" / "m" / "h.npy", x)
    import_tree(tmp_path / "s.zarr", str(tmp_path / "d/{model}/{layer}.npy"), reduce=how,
                dtype="float32")  # fmt: skip
    want = {
        "mean": x.mean(axis=1), "first": x[:, 0], "last": x[:, -1], "max": x.max(axis=1),
        "flatten": x.reshape(10, 12),
    }[how]  # fmt: skip
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["reprs/m/0/final"]
    (path,) = _arrays_below(group)
    np.testing.assert_allclose(group[path][:], want.astype(np.float32), rtol=1e-7)


def test_template_fields_and_defaults(tmp_path: Path) -> None:
    tpl = PathTemplate.parse("runs/{model}_seed{seed}/*/layer_{layer}.pt")
    assert tpl.root == Path("runs") and tpl.fields == ("model", "seed", "layer")
    assert tpl.match("bert_base_seed1/x/layer_3.pt") == {
        "model": "bert_base", "seed": "1", "layer": "3",
    }  # fmt: skip
    assert tpl.match("bert_seed1/x/y/layer_3.pt") is None  # one component per field / *
    literal = PathTemplate.parse("d/{model}.(x)+{{v}}/{layer}.npy")
    assert literal.match("m.(x)+{v}/l.npy") == {"model": "m", "layer": "l"}
    assert literal.match("m.xx+{v}/l.npy") is None  # regex characters are literal
    assert is_template(TEMPLATE) and not is_template("acts/layer_3.npy")


def test_template_never_evaluates_code(tmp_path: Path) -> None:
    for bad in ("d/{model.__class__}/{layer}.npy", "d/{model!r}/{layer}.npy",
                "d/{0}/{layer}.npy", "d/{model:>9}/{layer}.npy"):  # fmt: skip
        with pytest.raises(InputError, match="Unknown field"):
            PathTemplate.parse(bad)
    with pytest.raises(InputError, match="Unbalanced"):
        PathTemplate.parse("d/{model}/{layer.npy")


@pytest.fixture
def small_dumps(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for model, seed in itertools.product(("a", "b"), ("0", "1")):
        folder = tmp_path / "dumps" / model / f"seed{seed}"
        folder.mkdir(parents=True)
        for layer in ("l1", "l2"):
            np.save(folder / f"{layer}.npy", rng.normal(size=(12, 3)).astype(np.float32))
    import_tree(tmp_path / "s.zarr", str(tmp_path / "dumps/a/seed{seed}/{layer}.npy"), name="a")
    return tmp_path


BAD_TEMPLATES = [
    (["dumps/{model}/seed{seed}/l1.npy"], "does not say the layer"),
    (["dumps/a/seed{seed}/{layer}.npy"], "does not say the model"),
    (["dumps/{model}/seed{seed}/{layer}.pt"], "fits the import template"),  # nothing fits
    (["dumps/{model}/*/{layer}.npy"], "both map to"),
    (["dumps/{model}/seed{seed}/{layr}.npy"], "Unknown field {layr}"),
    (["dumps/{model}/seed{seed}/{layer}.npy", "--reduce", "median"], "Unknown --reduce"),
    (["nowhere/{model}/{layer}.npy"], "does not exist"),
    (["dumps/{model}/seed{seed}/{layer}.npy", "--layer", "x"], "leave out --layer"),
    (["dumps/{model}/seed{seed}/l1.npy", "--layer", "{stem}"], "{layer} in the template"),
]


@pytest.mark.parametrize(("args", "needle"), BAD_TEMPLATES)
@pytest.mark.parametrize("dry", [False, True])
def test_bad_templates_fail_cleanly_and_change_nothing(
    small_dumps: Path, args: list[str], needle: str, dry: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process (typer's CliRunner) for speed; the subprocess path is tested below."""
    from typer.testing import CliRunner

    from reprstore.cli.app import app

    monkeypatch.chdir(small_dumps)
    before = store_digest(small_dumps / "s.zarr")
    extra = ["--dry-run"] if dry else []
    r = CliRunner().invoke(app, ["import", "s.zarr", *args, *extra])
    assert_user_error(subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr), needle)
    assert store_digest(small_dumps / "s.zarr") == before


def test_a_bad_file_late_in_the_walk_writes_nothing(small_dumps: Path) -> None:
    np.save(small_dumps / "dumps/b/seed1/l3.npy", np.zeros((11, 3), np.float32))
    before = store_digest(small_dumps / "s.zarr")
    result = run_cli("import", "s.zarr", "dumps/{model}/seed{seed}/{layer}.npy", cwd=small_dumps)
    assert_user_error(result, "l3.npy has 11 rows")
    assert store_digest(small_dumps / "s.zarr") == before


def test_metadata_csv_with_an_unknown_model_is_refused(small_dumps: Path) -> None:
    (small_dumps / "dumps" / "metadata.csv").write_text("model,tasks\na,sst2\nzeta,mnli\n")
    before = store_digest(small_dumps / "s.zarr")
    result = run_cli("import", "s.zarr", "dumps/{model}/seed{seed}/{layer}.npy", cwd=small_dumps)
    assert_user_error(result, "zeta")
    assert store_digest(small_dumps / "s.zarr") == before


def test_conflicting_metadata_is_refused(small_dumps: Path) -> None:
    (small_dumps / "dumps" / "metadata.csv").write_text("model,seed,tasks\na,0,sst2\n")
    (small_dumps / "dumps" / "a" / "metadata.json").write_text('{"tasks": "mnli"}')
    before = store_digest(small_dumps / "s.zarr")
    result = run_cli("import", "s.zarr", "dumps/{model}/seed{seed}/{layer}.npy", cwd=small_dumps)
    assert_user_error(result, "make them agree")
    assert store_digest(small_dumps / "s.zarr") == before


def test_dataset_from_the_path_and_one_tensor_of_each_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    arrays = {}
    for dataset, n in (("sst2", 15), ("mnli", 9)):
        (tmp_path / "d" / dataset).mkdir(parents=True)
        for layer in ("l1", "l2"):
            h, pooled = rng.normal(size=(n, 4)), rng.normal(size=(n, 2))
            np.savez(tmp_path / "d" / dataset / f"{layer}.npz", hidden=h, pooled=pooled)
            arrays[(dataset, layer)] = pooled
    template = str(tmp_path / "d/{dataset}/{layer}.npz")
    with pytest.raises(InputError, match="several tensors"):
        import_tree(tmp_path / "s.zarr", template, name="m")
    plan = import_tree(tmp_path / "s.zarr", template, name="m", key="pooled", dtype="float32")
    assert sorted(plan.rows.items()) == [("mnli", 9), ("sst2", 15)]
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    for (dataset, layer), want in arrays.items():
        (info,) = [e for e in plan.entries if e.dataset == dataset and e.item.key.layer == layer]
        got = root[info.item.key.path][:]
        np.testing.assert_array_equal(got, want.astype(np.float32))
        assert root[f"datasets/{dataset}"].attrs["n_samples"] == len(want)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"{i:03d}" for i in range(15)))
    result = run_cli("import", "s2.zarr", template, "--name", "m", "--key", "pooled",
                     "--ids", str(ids), cwd=tmp_path)  # fmt: skip
    assert_user_error(result, "one dataset")
    assert not (tmp_path / "s2.zarr").exists()  # a refused import leaves no empty store


def test_random_templates_match_their_own_paths_literally() -> None:
    """Literal parts full of regex syntax match only themselves; fields come back intact."""
    rng = np.random.default_rng(11)
    literal_chars = [*"ab_-.+()[]^$|?\\", "{{", "}}"]
    name_chars = list("abcXYZ019_-.")
    for _ in range(200):
        fields = list(rng.permutation(["model", "seed", "layer"]))
        parts, path, values = [], [], {}
        for f in fields:
            lit = "".join(rng.choice(literal_chars, size=rng.integers(1, 4)))
            value = "".join(rng.choice(name_chars, size=rng.integers(1, 6))).strip(".") or "v"
            values[f] = value
            parts.append(f"{lit}{{{f}}}")
            path.append(lit.replace("{{", "{").replace("}}", "}") + value)
        tpl = PathTemplate.parse("root/" + "/".join(parts) + ".npy")
        assert tpl.match("/".join(path) + ".npy") == values, (parts, path)
        assert tpl.match("/".join(path) + "xnpy") is None  # '.' is not 'any character'


def test_an_interrupted_bulk_import_finishes_when_run_again(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    want = {}
    for model in ("a", "b"):
        (tmp_path / "d" / model).mkdir(parents=True)
        for layer in ("l1", "l2"):
            want[(model, layer)] = rng.normal(size=(6000, 64)).astype(np.float32)
            np.save(tmp_path / "d" / model / f"{layer}.npy", want[(model, layer)])
    template = str(tmp_path / "d/{model}/{layer}.npy")
    calls = []

    def stop(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 4:  # part-way through the second file
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_tree(tmp_path / "s.zarr", template, dtype="float32", progress=stop)
    again = import_tree(tmp_path / "s.zarr", template, dtype="float32")
    assert 0 < len(again.to_write) < 4  # what was complete is skipped
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    for (model, layer), x in want.items():
        arr = root[f"reprs/{model}/0/final/default/{layer}"]
        assert arr.attrs["complete"] is True
        np.testing.assert_array_equal(arr[:], x)


# --- trust-v3: hidden folders, deep metadata.json, links, clashing metadata names ---

SMALL = "dumps/{model}/seed{seed}/{layer}.npy"


def test_hidden_files_and_folders_are_skipped_and_counted(small_dumps: Path) -> None:
    """runs/.git/… (a field would take '.git' as a model) and .DS_Store are passed by."""
    hidden = small_dumps / "dumps" / ".git" / "seed0"
    hidden.mkdir(parents=True)
    (hidden / "l1.npy").write_text("ref: refs/heads/main")
    (small_dumps / "dumps" / "b" / "seed0" / ".l3.npy").write_bytes(b"\0" * 64)
    (small_dumps / "dumps" / "b" / ".ipynb_checkpoints").mkdir()
    result = run_cli("import", "s.zarr", SMALL, cwd=small_dumps)
    assert result.returncode == 0, result.stderr
    assert "skipped 3 hidden file(s)/folder(s) (.git, .ipynb_checkpoints, .l3.npy)" in result.stdout
    models = {i.key.model for i in Store.open(small_dumps / "s.zarr").select(None)}
    assert models == {"a", "b"}
    dry = run_cli("import", "s.zarr", SMALL, "--dry-run", cwd=small_dumps)
    assert "skipped 3 hidden" in dry.stdout, dry.stdout


def test_a_template_part_that_starts_with_a_dot_walks_into_hidden_folders(tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(7, 3)).astype(np.float32)
    (tmp_path / "d" / "m" / ".v").mkdir(parents=True)
    np.save(tmp_path / "d" / "m" / ".v" / "l1.npy", x)
    plan = import_tree(tmp_path / "s.zarr", str(tmp_path / "d/{model}/.v/{layer}.npy"),
                       dtype="float32")  # fmt: skip
    assert [e.item.key.label() for e in plan.entries] == ["m/0/final:l1"] and not plan.hidden
    np.testing.assert_array_equal(stored(tmp_path / "s.zarr", "reprs/m/0/final/default/l1"), x)


def test_metadata_json_nested_100000_deep_is_one_line(small_dumps: Path) -> None:
    deep = small_dumps / "dumps" / "b" / "metadata.json"
    deep.write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)
    before = store_digest(small_dumps / "s.zarr")
    result = run_cli("import", "s.zarr", SMALL, cwd=small_dumps)
    assert_user_error(result, "dumps/b/metadata.json", "nests deeper than 32 levels")
    assert "Unexpected" not in result.stderr and "Recursion" not in result.stderr
    deep.write_text('{"a": ' + "[" * 32 + "1" + "]" * 32 + "}")  # 33 levels: just over
    assert_user_error(run_cli("import", "s.zarr", SMALL, cwd=small_dumps), "deeper than 32")
    deep.write_text('{"a": "[[[[{{{{ not nesting", "b": ["x", 2]}')  # brackets in strings
    assert run_cli("import", "s.zarr", SMALL, cwd=small_dumps).returncode == 0
    assert Store.open(small_dumps / "s.zarr").run_attributes().level("runs")["b/0"] == {
        "a": "[[[[{{{{ not nesting", "b": "x,2",
    }  # fmt: skip
    assert store_digest(small_dumps / "s.zarr") != before


def test_a_link_to_a_text_file_is_named_not_echoed(small_dumps: Path) -> None:
    secret = small_dumps / "secret.txt"
    secret.write_text("TOPSECRET password=hunter2\n")
    link = small_dumps / "dumps" / "b" / "seed0" / "layer_3.npy"
    link.symlink_to(secret)
    before = store_digest(small_dumps / "s.zarr")
    result = run_cli("import", "s.zarr", SMALL, cwd=small_dumps)
    assert_user_error(result, "dumps/b/seed0/layer_3.npy", "symbolic link to",
                      "not a readable .npy", "holds text")  # fmt: skip
    assert "TOPSECRET" not in result.stderr and "hunter2" not in result.stderr
    link.unlink()
    link.symlink_to(small_dumps / "nowhere.npy")
    assert_user_error(run_cli("import", "s.zarr", SMALL, cwd=small_dumps), "layer_3.npy",
                      "which does not exist")  # fmt: skip
    assert store_digest(small_dumps / "s.zarr") == before


def test_a_link_to_an_array_outside_the_tree_is_followed(small_dumps: Path) -> None:
    """Links to files are followed and checked like files (labs link big dumps in)."""
    x = np.random.default_rng(4).normal(size=(12, 3)).astype(np.float32)
    np.save(small_dumps / "elsewhere.npy", x)
    (small_dumps / "dumps" / "b" / "seed1" / "l9.npy").symlink_to(small_dumps / "elsewhere.npy")
    plan = import_tree(small_dumps / "t.zarr", str(small_dumps / SMALL), dtype="float32")
    assert "b/1/final:l9" in {e.item.key.label() for e in plan.to_write}
    np.testing.assert_array_equal(stored(small_dumps / "t.zarr", "reprs/b/1/final/default/l9"), x)


def test_clashing_metadata_names_are_ignored_or_renamed_by_option(small_dumps: Path) -> None:
    meta = small_dumps / "dumps" / "b" / "metadata.json"
    meta.write_text('{"seed": 7, "step": 100, "lr": 0.1}')
    before = store_digest(small_dumps / "s.zarr")
    result = run_cli("import", "s.zarr", SMALL, cwd=small_dumps)
    assert_user_error(result, "dumps/b/metadata.json", "'seed': it is a key field",
                      "--attr-ignore seed", "--attr-rename seed=")  # fmt: skip
    result = run_cli("import", "s.zarr", SMALL, "--attr-ignore", "seed", cwd=small_dumps)
    assert_user_error(
        result,
        "conditions read 'step' off the checkpoint",
        "--attr-ignore step",
        "--attr-rename step=",
    )
    assert store_digest(small_dumps / "s.zarr") == before
    done = run_cli("import", "s.zarr", SMALL, "--attr-ignore", "seed", "--attr-rename",
                   "step=orig_step,lr=learning_rate", cwd=small_dumps)  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = Store.open(small_dumps / "s.zarr").run_attributes().level("runs")
    assert runs["b/0"] == runs["b/1"] == {"orig_step": "100", "learning_rate": "0.1"}
    assert "a/0" not in runs


def test_metadata_csv_columns_take_the_same_options(small_dumps: Path) -> None:
    (small_dumps / "dumps" / "metadata.csv").write_text("model,seed,step,tasks\nb,0,5,sst2\n")
    assert_user_error(run_cli("import", "s.zarr", SMALL, cwd=small_dumps), "metadata.csv",
                      "--attr-rename step=")  # fmt: skip
    plan = import_tree(small_dumps / "s.zarr", str(small_dumps / SMALL),
                       attr_rename={"step": "run_step"}, attr_ignore=["tasks"])  # fmt: skip
    assert plan.attributes[("runs", "b/0")] == {"run_step": "5"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--attr-rename", "step"], "OLD=NEW"),
        (["--attr-rename", "step=seed"], "'seed': it is a key field"),
        (["--attr-rename", "a=x,b=x"], "two names the one name 'x'"),
        (["--attr-rename", "a=x,a=y"], "names 'a' twice"),
        (["--attr-rename", "seed=bad-name"], "Invalid attribute name"),
        (["--attr-ignore", "seed,,step"], "empty name"),
        (["--attr-ignore", "seed", "--attr-rename", "seed=s"], "--attr-ignore"),
    ],
)
def test_bad_attribute_options_are_refused_before_the_walk(
    small_dumps: Path, args: list[str], needle: str
) -> None:
    before = store_digest(small_dumps / "s.zarr")
    assert_user_error(run_cli("import", "s.zarr", SMALL, *args, cwd=small_dumps), needle)
    assert store_digest(small_dumps / "s.zarr") == before


def test_attribute_options_need_a_template(small_dumps: Path) -> None:
    result = run_cli("import", "s.zarr", "dumps/a/seed0/l1.npy", "--name", "z", "--layer", "l",
                     "--attr-ignore", "seed", cwd=small_dumps)  # fmt: skip
    assert_user_error(result, "--attr-ignore needs a path template")
