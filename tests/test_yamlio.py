import pytest

from cubicfit.errors import ConfigError
from cubicfit.yamlio import load_yaml


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("value: 1e-6", 1e-6),
        ("value: 1E+3", 1000.0),
        ("value: 3.5e-6", 3.5e-6),
        ("value: .5", 0.5),
        ("value: no", "no"),
        ("value: on", "on"),
        ("value: yes", "yes"),
        ("value: 0755", "0755"),
        ("value: 0x1F", "0x1F"),
        ("value: 1_000", "1_000"),
        ("value: 2026-01-01", "2026-01-01"),
        ("value: true", True),
        ("value: 2000", 2000),
        ("value: -3", -3),
        ("value: ~", None),
    ],
)
def test_scalars_resolve_like_yaml_1_2(text, expected):
    assert load_yaml(text, "t.yaml")["value"] == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed: 1\nseed: 2\n", "duplicate key 'seed'"),
        ("run: !!python/object/apply:os.system ['true']", "tag"),
        ("run: !!python/name:os.system", "tag"),
        ("run: !!binary aGVsbG8=", "tag"),
        ("run: !custom 3", "tag"),
        ("a: [1, 2", "invalid YAML"),
        ("a: 1\n---\nb: 2\n", "2 YAML documents"),
        ("? [1, 2]\n: 3\n", "must be a string"),
    ],
)
def test_rejected_documents(text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as error:
        load_yaml(text, "bad.yaml")
    assert "bad.yaml" in str(error.value)


def test_deep_nesting_is_rejected():
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_yaml("a: " + "[" * 5000 + "]" * 5000, "deep.yaml")


def test_huge_integer_is_rejected():
    with pytest.raises(ConfigError, match="5000 digits is out of range"):
        load_yaml("seed: " + "9" * 5000, "big.yaml")


def test_empty_document_is_none():
    assert load_yaml("", "empty.yaml") is None
