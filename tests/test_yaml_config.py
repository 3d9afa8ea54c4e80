"""YAML config loading: strict models, overrides, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from guidedrl.yaml_config import ConfigError, StrictModel, dump_config, load_config, parse_overrides


class Trainer(StrictModel):
    lr: float = Field(1e-6, gt=0)
    group_size: int = Field(8, gt=1)


class Run(StrictModel):
    model: str = "student"
    tags: list[str] = []
    trainer: Trainer = Trainer()


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parse_overrides() -> None:
    assert parse_overrides(["trainer.lr=1e-5", "model=/path/m", "tags=[a, b]", "trainer.group_size=4"]) == {
        "trainer": {"lr": 1e-5, "group_size": 4}, "model": "/path/m", "tags": ["a", "b"]}
    assert parse_overrides(["a.b=1", "a=2"]) == {"a": 2}
    assert parse_overrides(["x=a=b", "y=", "z=null"]) == {"x": "a=b", "y": None, "z": None}
    for bad in ["trainer.lr", "=3", "a..b=1", "a.=1"]:
        with pytest.raises(ConfigError, match=f"override '{bad}'"):
            parse_overrides([bad])
    with pytest.raises(ConfigError, match="override 'a.b=2': a was set to a value"):
        parse_overrides(["a=1", "a.b=2"])
    with pytest.raises(ConfigError, match="override 'x=\\[1'"):
        parse_overrides(["x=[1"])


def test_file_then_overrides_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, "model: m1\ntrainer:\n  lr: 1e-4\n  group_size: 4\n")
    cfg = load_config(path, Run)
    assert (cfg.model, cfg.trainer.lr, cfg.trainer.group_size) == ("m1", 1e-4, 4)
    cfg = load_config(str(path), Run, ["trainer.lr=2e-5", "model=m2"])
    assert (cfg.model, cfg.trainer.lr, cfg.trainer.group_size) == ("m2", 2e-5, 4)
    assert load_config(None, Run) == Run()
    assert load_config(None, Run, ["trainer.group_size=16"]).trainer == Trainer(group_size=16)
    assert load_config(write(tmp_path, "", "empty.yaml"), Run) == Run()


def test_unknown_and_wrong_keys_are_named(tmp_path: Path) -> None:
    path = write(tmp_path, "trainer:\n  grup_size: 4\n  lr: fast\nmodle: m\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, Run)
    lines = str(info.value).splitlines()
    assert f"{path}: trainer.grup_size: unknown key (did you mean 'group_size'?)" in lines
    assert f"{path}: modle: unknown key (did you mean 'model'?)" in lines
    assert any(line.startswith(f"{path}: trainer.lr: Input should be a valid number") for line in lines)
    assert len(lines) == 3
    with pytest.raises(ConfigError, match=r"x.yaml: trainer.group_size: Input should be greater than 1"):
        load_config(write(tmp_path, "trainer: {group_size: 1}\n"), Run)
    with pytest.raises(ConfigError, match=r"^--set tags=\[a, \[b\]\]: tags\[1\]: Input should be a valid string"):
        load_config(None, Run, ["tags=[a, [b]]"])


def test_errors_name_the_override_that_set_the_key_and_the_file_for_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, "trainer:\n  lr: fast\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, Run, ["trainer.group_size=0", "trainer.lrr=1"])
    lines = str(info.value).splitlines()
    assert any(line.startswith(f"{path}: trainer.lr: Input should be a valid number") for line in lines)
    assert "--set trainer.group_size=0: trainer.group_size: Input should be greater than 1" in lines
    assert "--set trainer.lrr=1: trainer.lrr: unknown key (did you mean 'lr'?)" in lines


def test_missing_invalid_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: no such config file"):
        load_config(tmp_path / "nope.yaml", Run)
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping .* got list"):
        load_config(write(tmp_path, "- a\n- b\n", "list.yaml"), Run)
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(write(tmp_path, "a: [1\n", "bad.yaml"), Run)


def test_strict_assignment_and_dump_round_trip(tmp_path: Path) -> None:
    cfg = load_config(None, Run, ["trainer.lr=3e-5", "tags=[x]"])
    with pytest.raises(ValueError):
        cfg.trainer.group_size = 1
    dump_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(tmp_path / "run" / "config.yaml", Run) == cfg
