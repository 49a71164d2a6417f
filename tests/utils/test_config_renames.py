"""Deprecated config keys (a dataclass's ``RENAMED``) still load for a release, with a warning naming the new key."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import ClassVar, Optional

import pytest

from rlhfkit.config import ConfigError, build_config, field, load_config


@dataclasses.dataclass
class Optim:
    lr: float = field(1e-3, help="learning rate")
    grad_accum: int = field(1, help="accumulation")


@dataclasses.dataclass
class Lora:
    RENAMED: ClassVar[dict[str, str]] = {"rank": "r"}

    r: int = field(8, help="rank")


@dataclasses.dataclass
class Run:
    RENAMED: ClassVar[dict[str, str]] = {"learning_rate": "optim.lr"}

    steps: int = field(10, help="steps")
    optim: Optim = field(default_factory=Optim, help="optimizer")
    lora: Optional[Lora] = field(None, help="adapters")


@dataclasses.dataclass
class Top:
    RENAMED: ClassVar[dict[str, str]] = {"batch_size": "num_prompts", "grad_accum": "run.optim.grad_accum"}

    num_prompts: int = field(4, help="prompts")
    run: Run = field(default_factory=lambda: Run(optim=Optim(lr=0.5)), help="run")


def test_old_keys_move_to_the_new_ones_at_every_level(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text("batch_size: 8\ngrad_accum: 2\nrun:\n  learning_rate: 0.1\n  lora: {rank: 4}\n")
    with pytest.warns(FutureWarning) as caught:
        config = load_config(Top, path)
    assert (config.num_prompts, config.run.optim.grad_accum, config.run.optim.lr, config.run.lora) == (
        8, 2, 0.1, Lora(r=4))
    said = sorted(str(w.message) for w in caught)
    assert len(said) == 4  # one warning per old key
    assert "`run.learning_rate` is renamed `run.optim.lr`; the old name will be removed in the next release" in said
    assert any(s.startswith("`run.lora.rank` is renamed `run.lora.r`") for s in said)


def test_a_nested_rename_keeps_the_other_defaults_of_that_section() -> None:
    with pytest.warns(FutureWarning):
        config = load_config(Top, None, ["grad_accum=3"])
    assert config.run.optim == Optim(lr=0.5, grad_accum=3)


def test_old_and_new_name_in_one_source_is_an_error() -> None:
    with pytest.raises(ConfigError, match="both `batch_size` and `num_prompts`"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_config(Top, None, ["batch_size=8", "num_prompts=4"])


def test_a_later_source_overrides_an_old_key_of_an_earlier_one(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text("run:\n  learning_rate: 0.1\n")
    with pytest.warns(FutureWarning):
        config = load_config(Top, path, ["run.optim.lr=0.2"])
    assert config.run.optim.lr == 0.2


def test_build_config_renames_too_and_new_names_do_not_warn() -> None:
    with pytest.warns(FutureWarning, match="`batch_size` is renamed `num_prompts`"):
        assert build_config(Top, {"batch_size": 2}).num_prompts == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_config(Top, None, ["num_prompts=2", "run.optim.lr=0.3"]).run.optim.lr == 0.3
