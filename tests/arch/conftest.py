"""The architecture matrix: its tests are marked ``arch`` (select them alone with ``-m arch``) and
share one tiny model per architecture, built on first use in a session-wide directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from arch_zoo import Built, build


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``arch`` marker."""
    config.addinivalue_line("markers", "arch: the architecture matrix (tiny models of nineteen families)")


class Zoo:
    """Builds each architecture once per session, on first request."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.built: dict[str, Built] = {}

    def __getitem__(self, name: str) -> Built:
        if name not in self.built:
            from transformers.utils import logging as hf_logging

            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            try:
                self.built[name] = build(name, self.root / name)
            finally:
                hf_logging.set_verbosity(verbosity)
        return self.built[name]

    def reward_model(self, name: str) -> Path:
        """A fresh (untrained) trunk + head reward model on the architecture's trunk, saved once."""
        directory = self.root / name / "reward"
        if not directory.is_dir():
            from rlhfkit.models.reward_model import RewardModel

            RewardModel.from_trunk(self[name].policy, seed=0).save_pretrained(directory)
        return directory


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    """The session's tiny models, by architecture name."""
    return Zoo(tmp_path_factory.mktemp("arch"))
