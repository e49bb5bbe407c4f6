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
        key = ReprKey(*(_random_name(rnd) for _ in range(4)))
        assert key.path == "/".join(["reprs", key.model, key.seed, key.checkpoint, key.layer])
        assert ReprKey.from_path(key.path) == key


def test_key_path_examples() -> None:
    key = ReprKey("minilm", "0", "step1000", "encoder.layer.3")
    assert key.path == "reprs/minilm/0/step1000/encoder.layer.3"
    assert key.label() == "minilm/0/step1000:encoder.layer.3"
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
        ReprKey("m", "0", "final", name)


def test_from_path_rejects_other_paths() -> None:
    with pytest.raises(InvalidNameError, match="Expected a path"):
        ReprKey.from_path("reprs/m/0/final")
    with pytest.raises(InvalidNameError):
        ReprKey.from_path("other/m/0/final/l")


def test_selector_parse_and_match() -> None:
    sel = Selector.parse("model=minilm, seed=*,layer=encoder.layer.*")
    assert sel.get("model") == "minilm"
    assert sel.get("checkpoint") == "*"
    assert sel.matches(ReprKey("minilm", "3", "final", "encoder.layer.5"), "default")
    assert not sel.matches(ReprKey("minilm", "3", "final", "pooler"), "default")
    assert not sel.matches(ReprKey("bert", "3", "final", "encoder.layer.5"), "default")
    assert str(sel) == "model=minilm,seed=*,layer=encoder.layer.*"


def test_selector_dataset_and_character_classes() -> None:
    sel = Selector.parse("dataset=probe?,layer=l[12]")
    key = ReprKey("m", "0", "final", "l1")
    assert sel.matches(key, "probeA")
    assert not sel.matches(key, "probeAB")
    assert not sel.matches(ReprKey("m", "0", "final", "l3"), "probeA")
    assert not sel.matches(key, None)


def test_empty_selector_selects_everything() -> None:
    for text in (None, "", "  ", "*", " * "):
        assert Selector.parse(text).matches(ReprKey("a", "b", "c", "d"), "x")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("colour=red", "Unknown selector key 'colour'"),
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
