"""Names, key ↔ path round trip and selectors (pure, no I/O)."""

from __future__ import annotations

import random
import string

import pytest

from reprstore.errors import InvalidNameError, SelectorError
from reprstore.keys import (
    ReprKey,
    Selector,
    dataset_path,
    differ_match_filter,
    expand_layer_template,
    parse_keys,
    validate_name,
)

ALPHABET = string.ascii_letters + string.digits + "._-"


def _random_name(rnd: random.Random) -> str:
    while True:
        name = "".join(rnd.choice(ALPHABET) for _ in range(rnd.randint(1, 12)))
        if ".." not in name and not name.startswith(("__", ".")):
            return name


def test_key_path_round_trip_for_random_names() -> None:
    rnd = random.Random(7)
    for _ in range(500):
        key = ReprKey(*(_random_name(rnd) for _ in range(5)))
        assert key.path == "/".join(
            ["reprs", key.model, key.seed, key.checkpoint, key.dataset, key.layer]
        )
        assert ReprKey.from_path(key.path) == key


def test_key_path_examples() -> None:
    key = ReprKey("minilm", "0", "step1000", "default", "encoder.layer.3")
    assert key.path == "reprs/minilm/0/step1000/default/encoder.layer.3"
    assert key.label() == "minilm/0/step1000:encoder.layer.3"
    assert ReprKey("m", "0", "final", "probe", "l1").label() == "m/0/final/probe:l1"
    assert dataset_path("default") == "datasets/default"


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("", "non-empty"),
        ("  ", "non-empty"),
        ("a/b", "'/'"),
        ("..", r"\.\."),
        ("a..b", r"\.\."),
        ("__x", "__"),
        ("layer*", r"'\*'"),
        ("a,b", "','"),
        ("k=v", "'='"),
        (" a", "spaces"),
    ],
)
def test_invalid_names_are_refused(name: str, match: str) -> None:
    with pytest.raises(InvalidNameError, match=match):
        validate_name(name, "layer")
    with pytest.raises(InvalidNameError):
        ReprKey("m", "0", "final", "default", name)


def test_from_path_rejects_other_paths() -> None:
    with pytest.raises(InvalidNameError, match="Expected a path"):
        ReprKey.from_path("reprs/m/0/final/l")
    with pytest.raises(InvalidNameError):
        ReprKey.from_path("other/m/0/final/d/l")


def test_selector_parse_and_match() -> None:
    sel = Selector.parse("model=minilm, seed=*,layer=encoder.layer.*")
    assert sel.get("model") == "minilm"
    assert sel.get("checkpoint") == "*"
    assert sel.matches(ReprKey("minilm", "3", "final", "default", "encoder.layer.5"))
    assert not sel.matches(ReprKey("minilm", "3", "final", "default", "pooler"))
    assert not sel.matches(ReprKey("bert", "3", "final", "default", "encoder.layer.5"))
    assert str(sel) == "model=minilm,seed=*,layer=encoder.layer.*"


def test_selector_dataset_and_character_classes() -> None:
    sel = Selector.parse("dataset=probe?,layer=l[12]")
    key = ReprKey("m", "0", "final", "probeA", "l1")
    assert sel.matches(key)
    assert not sel.matches(ReprKey("m", "0", "final", "probeAB", "l1"))
    assert not sel.matches(ReprKey("m", "0", "final", "probeA", "l3"))


def test_empty_selector_selects_everything() -> None:
    for text in (None, "", "  ", "*", " * "):
        assert Selector.parse(text).matches(ReprKey("a", "b", "c", "x", "d"))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("col-our=red", "Unknown selector key 'col-our'"),
        ("model", "not key=value"),
        ("model=a,model=b", "given twice"),
        ("layer=", "empty value"),
    ],
)
def test_bad_selectors(text: str, match: str) -> None:
    with pytest.raises(SelectorError, match=match):
        Selector.parse(text)


def test_layer_templates() -> None:
    assert expand_layer_template("{stem}", stem="layer_3") == "layer_3"
    assert expand_layer_template("blk.{key}", stem="f", key="h4") == "blk.h4"
    with pytest.raises(InvalidNameError, match="template"):
        expand_layer_template("{name}", stem="x")
    with pytest.raises(InvalidNameError):
        expand_layer_template("{stem}", stem="a/b")


def test_match_differ_keys() -> None:
    a = {"model": "m", "seed": "0", "layer": "l1"}
    b = {"model": "m", "seed": "1", "layer": "l1"}
    assert differ_match_filter(a, b, ["layer"], ["seed"])
    assert not differ_match_filter(a, a, ["layer"], ["seed"])
    assert parse_keys("layer, seed", "--match") == ("layer", "seed")
    with pytest.raises(SelectorError, match="--differ"):
        parse_keys("colour", "--differ")


# -- natural order, steps, selectors v2, templates (issue 11) -----------------------------
def test_natural_key_orders_numbers_by_value() -> None:
    from reprstore.keys import natural_key

    names = ["layer_10", "layer_2", "layer_1", "layer_2.a", "pooler", "layer_02"]
    assert sorted(names, key=natural_key) == [
        "layer_1", "layer_02", "layer_2", "layer_2.a", "layer_10", "pooler",
    ]  # fmt: skip
    assert sorted(["step100", "step20", "step3", "final"], key=natural_key) == [
        "final", "step3", "step20", "step100",
    ]  # fmt: skip
    blocks = [f"encoder.layer.{i}" for i in (10, 2, 11, 0, 1)]
    assert sorted(blocks, key=natural_key) == [f"encoder.layer.{i}" for i in (0, 1, 2, 10, 11)]
    # numbers beyond 64 bits still compare by value
    assert sorted(["s" + "9" * 30, "s" + "1" + "0" * 30], key=natural_key)[0] == "s" + "9" * 30


def test_checkpoint_step() -> None:
    from reprstore.keys import checkpoint_step

    cases = {"step1000": 1000, "step_20": 20, "epoch3": 3, "328146": 328146, "ckpt-7": 7,
             "final": None, "3-20": None, "orig": None}  # fmt: skip
    assert {label: checkpoint_step(label) for label in cases} == cases


def _k(model: str = "full", seed: str = "0", layer: str = "l1") -> ReprKey:
    return ReprKey(model, seed, "final", "default", layer)


@pytest.mark.parametrize("text", ["model=full|lora", "model={full,lora}", "model={full, lora}"])
def test_selector_alternatives(text: str) -> None:
    sel = Selector.parse(text + ",layer=l*")
    assert sel.matches(_k("full")) and sel.matches(_k("lora"))
    assert not sel.matches(_k("base"))


def test_selector_negation_and_globs() -> None:
    sel = Selector.parse("model!=base,seed!=1|2,layer=encoder.*")
    assert sel.matches(_k("full", "0", "encoder.3"))
    assert not sel.matches(_k("base", "0", "encoder.3"))
    assert not sel.matches(_k("full", "2", "encoder.3"))
    assert not sel.matches(_k("full", "0", "pooler"))
    assert not Selector.parse("model!=f*").matches(_k("full"))


def test_selector_run_attributes() -> None:
    sel = Selector.parse("method=lora,model={full,lora}")
    assert sel.attribute_keys == ("method",)
    assert sel.matches(_k("lora"), {"method": "lora"})
    assert not sel.matches(_k("lora"), {"method": "full"})
    assert not sel.matches(_k("lora"), {})  # no such attribute: '=' fails …
    assert Selector.parse("method!=lora").matches(_k("lora"), {})  # … and '!=' holds


@pytest.mark.parametrize(
    ("text", "match"),
    [("model={a,b", "without its"), ("model=a}", "without its"), ("model=a|", "empty value"),
     ("model!=", "empty value"), ("model=a,model!=b", "given twice")],
)  # fmt: skip
def test_bad_selectors_v2(text: str, match: str) -> None:
    with pytest.raises(SelectorError, match=match):
        Selector.parse(text)


def test_field_substitution_never_evaluates() -> None:
    from reprstore.keys import substitute_fields

    assert substitute_fields("{layer}.cls", {"layer": "enc.3"}, "--x") == "enc.3.cls"
    assert substitute_fields("{{{layer}}}", {"layer": "a"}, "--x") == "{a}"
    assert substitute_fields("{layer}", {"layer": "{reduce}"}, "--x") == "{reduce}"
    for bad in ("{layer.__class__}", "{layer[0]}", "{0}", "{}", "{layer!r}", "{layer:>9}",
                "{layer", "x}"):  # fmt: skip
        with pytest.raises(InvalidNameError, match="--x template"):
            substitute_fields(bad, {"layer": "l"}, "--x")
    with pytest.raises(InvalidNameError, match="template"):
        expand_layer_template("{stem.__class__.__mro__}", stem="x")


def test_keys_sort_naturally() -> None:
    keys = [ReprKey("m", s, c, "default", la) for s in ("10", "2") for c in ("step100", "step20")
            for la in ("layer_10", "layer_2")]  # fmt: skip
    got = [(k.seed, k.checkpoint, k.layer) for k in sorted(keys)]
    assert got == [(s, c, la) for s in ("2", "10") for c in ("step20", "step100")
                   for la in ("layer_2", "layer_10")]  # fmt: skip
    assert ReprKey("a", "0", "f", "d", "l") <= ReprKey("a", "0", "f", "d", "l")


# --- trust-v3: attribute names conditions can read; names in one Unicode spelling
@pytest.mark.parametrize(
    ("name", "needle"),
    [("__x__", "start with an ASCII letter"), ("__class__", "start with an ASCII letter"),
     ("_x", "start with an ASCII letter"), ("1x", "start with an ASCII letter"),
     ("a-b", "start with an ASCII letter"), ("a.b", "start with an ASCII letter"),
     ("tasks\n", "start with an ASCII letter"), ("a b", "start with an ASCII letter"),
     ("étape", "ASCII"), ("", "start with"), ("if", "Python keyword"),
     ("None", "Python keyword"), ("True", "Python keyword"), ("step", "training step"),
     ("model", "key field"), ("seed", "key field"), ("checkpoint", "key field"),
     ("dataset", "key field"), ("layer", "key field")],
)  # fmt: skip
def test_attribute_names_conditions_cannot_read_are_refused(name: str, needle: str) -> None:
    from reprstore.keys import validate_attribute_name

    with pytest.raises(InvalidNameError, match=needle) as err:
        validate_attribute_name(name)
    assert repr(name) in str(err.value) and "\n" not in str(err.value)


def test_every_name_a_pair_condition_reads_from_the_key_is_refused_as_an_attribute() -> None:
    """The reserved names are exactly what a pair condition reads besides attributes."""
    from reprstore.expr import parse_pair_filter
    from reprstore.keys import validate_attribute_name
    from reprstore.workflows.comparison import PAIR_KEYS

    for name in PAIR_KEYS:
        with pytest.raises(InvalidNameError):
            validate_attribute_name(name)
    for name in ("tasks", "method", "match", "case", "type", "Step", "train_step"):
        assert validate_attribute_name(name) == name  # and conditions read it:
        assert parse_pair_filter(f"a.{name} == b.{name}")({name: "x"}, {name: "x"})


NFC, NFD = "caf\u00e9", "cafe\u0301"


def test_names_are_normalised_to_nfc_where_they_are_given() -> None:
    from reprstore.keys import nfc

    assert NFC != NFD and nfc(NFD) == NFC
    assert validate_name(NFD, "model") == NFC
    key = ReprKey(NFD, NFD, NFD, NFD, NFD)
    assert key == ReprKey(NFC, NFC, NFC, NFC, NFC)
    assert key.path == f"reprs/{NFC}/{NFC}/{NFC}/{NFC}/{NFC}"
    assert dataset_path(NFC) == f"datasets/{NFC}"
    # a key listed from a store keeps the stored spelling, so its path finds the folder
    stored = ReprKey.stored(NFD, "0", "final", "default", "l1")
    assert stored.model == NFD and ReprKey.from_path(stored.path) == stored


def test_selectors_and_pair_conditions_match_names_in_either_spelling() -> None:
    from reprstore.expr import parse_pair_filter

    nfc_key = ReprKey(NFC, "0", "final", "default", "l1")
    nfd_key = ReprKey.stored(NFD, "0", "final", "default", "l1")
    for text in (f"model={NFC}", f"model={NFD}", f"model={{{NFD},x}}", "model=caf?"):
        sel = Selector.parse(text)
        assert sel.matches(nfc_key) and sel.matches(nfd_key), text
    assert not Selector.parse(f"model!={NFD}").matches(nfc_key)
    assert Selector.parse(f"method={NFD}").matches(nfc_key, {"method": NFC})
    for literal in (NFC, NFD):
        flt = parse_pair_filter(f"a.model == '{literal}' and b.model in ['{literal}']")
        assert flt({"model": NFD}, {"model": NFC})
