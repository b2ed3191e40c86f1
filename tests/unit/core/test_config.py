from pathlib import Path

import pytest
import yaml

from tasks.core.config import Params, load_params
from tasks.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, tree: dict) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(tree))
    return p


def test_shipped_params_validate_every_section():
    params = load_params(REPO / "params.yaml")
    assert params.ingest.sources == ["data/sample/corpus"]
    assert params.chunk.overlap_tokens < params.chunk.size_tokens
    assert set(params.as_dict()) == set(yaml.safe_load((REPO / "params.yaml").read_text()))


def test_override_is_typed_and_applied():
    params = load_params(REPO / "params.yaml", ["chunk.size_tokens=128", "index.distance=dot"])
    assert params.chunk.size_tokens == 128 and params.index.distance == "dot"


def test_unknown_key_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"chunk\.sise_tokens: unknown key"):
        load_params(write(tmp_path, {"ingest": {"sources": ["x"]}, "chunk": {"sise_tokens": 5}}))


def test_wrong_type_names_field_and_value(tmp_path):
    with pytest.raises(ConfigError, match=r"embed\.batch_size: .*integer.*\"many\""):
        load_params(write(tmp_path, {"ingest": {"sources": ["x"]}, "embed": {"batch_size": "many"}}))


def test_unknown_override_lists_known_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'size' under chunk. Known keys: overlap_tokens, size_tokens"):
        load_params(REPO / "params.yaml", ["chunk.size=3"])


def test_overlap_must_be_below_size():
    with pytest.raises(ConfigError, match="overlap_tokens .* must be smaller"):
        load_params(REPO / "params.yaml", ["chunk.overlap_tokens=300"])


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not a key=value"):
        load_params(REPO / "params.yaml", ["chunk.size_tokens"])
    with pytest.raises(ConfigError, match="no such params file"):
        load_params(tmp_path / "nope.yaml")


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_every_code_default_equals_the_shipped_params_yaml():
    """A section or key left out of params.yaml falls back to the code: both must say the same."""
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    shipped = flatten(tree)
    defaults = flatten(Params.model_validate({"ingest": {"sources": tree["ingest"]["sources"]}}).as_dict())
    in_both = sorted(set(shipped) & set(defaults))
    assert len(in_both) > 50, "the comparison must cover the params, not an empty intersection"
    differ = {k: (defaults[k], shipped[k]) for k in in_both if defaults[k] != shipped[k]}
    assert not differ, f"code default != params.yaml (code, yaml): {differ}"
    assert not set(shipped) - set(defaults), "params.yaml keys the code does not define"
