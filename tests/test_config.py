"""Strict params.yaml loading, validation and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vesselseg.config import (
    Params,
    apply_overrides,
    as_triple,
    flatten,
    load_params,
    params_to_dict,
    with_values,
)
from vesselseg.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def defaults() -> dict:
    return params_to_dict(Params())


def test_params_yaml_mirrors_dataclass_defaults() -> None:
    assert load_params(ROOT / "params.yaml") == Params()


def test_unknown_key_names_the_key(tmp_path: Path) -> None:
    data = defaults()
    data["train"]["lrr"] = 0.1
    with pytest.raises(ConfigError, match=r"unknown key train\.lrr"):
        load_params(write(tmp_path, data))


def test_unknown_section(tmp_path: Path) -> None:
    data = defaults()
    data["trian"] = {}
    with pytest.raises(ConfigError, match="unknown key trian"):
        load_params(write(tmp_path, data))


def test_missing_key_names_the_key(tmp_path: Path) -> None:
    data = defaults()
    del data["infer"]["overlap"]
    with pytest.raises(ConfigError, match=r"missing key infer\.overlap"):
        load_params(write(tmp_path, data))


def test_mistyped_value(tmp_path: Path) -> None:
    data = defaults()
    data["train"]["batch_size"] = "two"
    with pytest.raises(ConfigError, match=r"train\.batch_size must be int"):
        load_params(write(tmp_path, data))


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    data = defaults()
    data["train"]["max_epochs"] = True
    with pytest.raises(ConfigError, match=r"train\.max_epochs"):
        load_params(write(tmp_path, data))


def test_out_of_range(tmp_path: Path) -> None:
    data = defaults()
    data["train"]["lr"] = -0.1
    with pytest.raises(ConfigError, match=r"train\.lr must be > 0"):
        load_params(write(tmp_path, data))
    data = defaults()
    data["infer"]["overlap"] = 1.0
    with pytest.raises(ConfigError, match=r"infer\.overlap must be < 1"):
        load_params(write(tmp_path, data))


def test_choice_and_triple(tmp_path: Path) -> None:
    data = defaults()
    data["model"]["norm"] = "layer"
    with pytest.raises(ConfigError, match=r"model\.norm must be one of 'batch', 'group'"):
        load_params(write(tmp_path, data))
    data = defaults()
    data["data"]["crop_size"] = [64, 64]
    with pytest.raises(ConfigError, match=r"data\.crop_size"):
        load_params(write(tmp_path, data))


def test_relations(tmp_path: Path) -> None:
    data = defaults()
    data["pseudo"]["lo"] = 0.95
    with pytest.raises(ConfigError, match=r"pseudo\.lo must be < pseudo\.hi"):
        load_params(write(tmp_path, data))


def test_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_overrides_parse_yaml_values_and_validate() -> None:
    params = apply_overrides(Params(), ["train.lr=0.01", "data.crop_size=32", "infer.tta=true"])
    assert params.train.lr == 0.01
    assert params.data.crop_size == 32 and as_triple(params.data.crop_size) == (32, 32, 32)
    assert params.infer.tta is True
    with pytest.raises(ConfigError, match=r"unknown key"):
        apply_overrides(Params(), ["train.nope=1"])
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        apply_overrides(Params(), ["train.lr"])
    with pytest.raises(ConfigError, match=r"train\.lr must be > 0"):
        apply_overrides(Params(), ["train.lr=0"])


def test_with_values_skips_none_and_checks() -> None:
    params = with_values(Params(), {"train.lr": None, "train.batch_size": 4})
    assert params.train.lr == Params().train.lr and params.train.batch_size == 4
    with pytest.raises(ConfigError, match=r"train\.batch_size must be >= 1"):
        with_values(Params(), {"train.batch_size": 0})


def test_precision_accepts_yaml_int() -> None:
    assert apply_overrides(Params(), ["train.precision=32"]).train.precision == "32"


def test_flatten_has_dotted_keys() -> None:
    flat = flatten(Params())
    assert flat["train.lr"] == Params().train.lr
    assert "synth.shape" in flat and all("." in key for key in flat)
