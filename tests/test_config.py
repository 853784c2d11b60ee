"""Strict params.yaml loading, validation and overrides."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from vesselseg.config import (
    ModelConfig,
    Params,
    apply_overrides,
    as_triple,
    flatten,
    load_params,
    params_from_dict,
    params_to_dict,
    section_from_dict,
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


def test_dvc_stage_params_exist() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    known = {*params_to_dict(Params()), *flatten(Params())}
    for name, stage in stages.items():
        for entry in stage.get("params", []):
            keys = entry if isinstance(entry, str) else next(iter(entry.values()))
            for key in [keys] if isinstance(keys, str) else keys:
                assert key in known, f"dvc.yaml stage {name}: unknown param {key}"


def test_mistyped_values_are_refused_not_coerced() -> None:
    for key, value in [
        ("train.batch_size", 2.0),
        ("train.lr", "0.01"),
        ("train.lr", True),
        ("infer.tta", 1),
        ("register.name", 5),
        ("data.crop_size", "48"),
        ("data.percentiles", 1.0),
    ]:
        with pytest.raises(ConfigError, match=f"option: {re.escape(key)} must be "):
            with_values(Params(), {key: value})
    params = with_values(Params(), {"train.lr": 1, "data.crop_size": (32, 48, 64)})
    assert params.train.lr == 1.0 and isinstance(params.train.lr, float)
    assert params.data.crop_size == [32, 48, 64]


def test_size_and_relation_messages_name_keys() -> None:
    with pytest.raises(ConfigError, match=r"data\.crop_size must be >= 8, got \[4, 4, 4\]"):
        with_values(Params(), {"data.crop_size": [4, 4, 4]})
    with pytest.raises(ConfigError, match=r"model\.context must be odd, got 4"):
        with_values(Params(), {"model.context": 4})
    with pytest.raises(ConfigError, match=r"tune\.lr_min must be <= tune\.lr_max"):
        with_values(Params(), {"tune.lr_min": 1.0})
    with pytest.raises(ConfigError, match=r"params: train must be a mapping, got list"):
        params_from_dict({**defaults(), "train": [1]})


def test_section_from_dict_and_lenient_params() -> None:
    model = params_to_dict(ModelConfig())
    assert section_from_dict(ModelConfig, model, "model", source="m.json") == ModelConfig()
    with pytest.raises(ConfigError, match=r"m\.json: unknown key model\.nope"):
        section_from_dict(ModelConfig, {**model, "nope": 1}, "model", source="m.json")
    with pytest.raises(ConfigError, match=r"m\.json: missing key model\.norm"):
        section_from_dict(ModelConfig, {"name": "unet"}, "model", source="m.json")
    assert params_from_dict({"train": {"lr": 0.5}}, strict=False).train.lr == 0.5
    with pytest.raises(ConfigError, match=r"unknown key train\.lrr"):
        params_from_dict({"train": {"lrr": 0.5}}, strict=False)
