"""Config loading: defaults < YAML < overrides, with errors that name the key and the file."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, Optional

import pytest

from rlhfkit.config import ConfigError, field, load_config, parse_overrides, save_config


@dataclasses.dataclass
class Optim:
    lr: float = field(1e-3, help="learning rate")
    betas: tuple[float, float] = field((0.9, 0.999), help="Adam betas")


@dataclasses.dataclass
class Example:
    steps: int = field(10, help="number of steps")
    name: str = field("run", help="run name")
    schedule: Literal["cosine", "linear"] = field("cosine", help="lr schedule")
    resume: bool = field(False, help="resume")
    limit: Optional[int] = field(None, help="optional limit")
    tags: list[str] = field(default_factory=list, help="tags")
    optim: Optim = field(default_factory=Optim, help="optimizer")


def test_defaults_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\noptim:\n  lr: 0.01\n")
    config = load_config(Example, path, ["optim.lr=5e-4", "resume=true", "tags=a,b", "limit=3"])
    assert config.steps == 20
    assert config.optim.lr == pytest.approx(5e-4)
    assert config.optim.betas == (0.9, 0.999)
    assert config.resume is True and config.tags == ["a", "b"] and config.limit == 3


def test_mapping_overrides_skip_none() -> None:
    config = load_config(Example, None, {"steps": 5, "name": None})
    assert config.steps == 5 and config.name == "run"


def test_string_override_null_sets_none_at_any_depth(tmp_path: Path) -> None:
    """``limit=null`` clears a top-level optional field (it was once dropped like a typer option not given)."""
    path = tmp_path / "c.yaml"
    path.write_text("limit: 7\n")
    assert load_config(Example, path, ["limit=null"]).limit is None
    assert load_config(Example, path, ["limit=none"]).limit is None
    assert load_config(Example, path, []).limit == 7


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("stepz: 3\n")
    with pytest.raises(ConfigError, match=r"stepz.*bad.yaml"):
        load_config(Example, path)


@pytest.mark.parametrize("override, message", [
    ("steps=1.5", "steps: expected an integer"),
    ("schedule=step", "schedule: 'step' is not one of"),
    ("resume=maybe", "resume: expected true/false"),
    ("optim.lr=fast", "optim.lr: expected a number"),
    ("steps", "must look like key=value"),
])
def test_bad_values_name_the_field(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(Example, None, [override])


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Example, tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Example, bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(Example, listy)


def test_save_and_reload_round_trip(tmp_path: Path) -> None:
    config = load_config(Example, None, ["steps=7", "tags=x", "optim.lr=0.5"])
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(Example, tmp_path / "saved.yaml") == config


def test_parse_overrides_nests_and_types() -> None:
    assert parse_overrides(["a.b=1", "c=x", "d="]) == {"a": {"b": 1}, "c": "x", "d": ""}


@dataclasses.dataclass
class Tuned:
    optim: Optim = field(default_factory=lambda: Optim(lr=0.5, betas=(0.8, 0.9)), help="non-default nested values")


def test_partial_nested_override_keeps_factory_defaults() -> None:
    config = load_config(Tuned, None, ["optim.lr=0.1"])
    assert config.optim.lr == pytest.approx(0.1)
    assert config.optim.betas == (0.8, 0.9)
