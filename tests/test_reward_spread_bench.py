"""bench/reward_spread.py pools saved member margins by seed into ensembles and averages their confidence gaps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import reward_spread  # noqa: E402


def save_run(directory: Path, margins: np.ndarray, groups: list[int], rm_seed: int | None) -> Path:
    directory.mkdir(parents=True)
    saved = {"groups": groups, "margins": margins.tolist()}
    if rm_seed is not None:
        saved["rm_seed"] = rm_seed
    (directory / "correct.json").write_text(json.dumps(saved))
    return directory


def test_members_are_keyed_by_seed_from_the_file_or_the_run_name(tmp_path: Path) -> None:
    groups = [0, 0, 1]
    first = save_run(tmp_path / "a", np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), groups, rm_seed=4)
    second = save_run(tmp_path / "rm-x-0-6", np.array([[7.0], [8.0], [9.0]]), groups, rm_seed=None)
    by_seed, read_groups = reward_spread.member_margins([first, second])
    assert sorted(by_seed) == [4, 5, 6] and read_groups == groups
    assert by_seed[5].tolist() == [2.0, 4.0, 6.0] and by_seed[6].tolist() == [7.0, 8.0, 9.0]
    assert reward_spread.ensembles([4, 5, 6, 9], 2) == [[4, 5], [5, 6]]
    other = save_run(tmp_path / "b", np.ones((3, 1)), [0, 1, 1], rm_seed=0)
    with pytest.raises(SystemExit, match="another evaluation split"):
        reward_spread.member_margins([first, other])


def test_prints_each_ensembles_gap_and_their_mean(tmp_path: Path) -> None:
    # four pairs, two members; agreement marks pairs 0 and 1 confident, and they are the right ones
    margins = np.array([[2.0, 1.0], [1.0, 3.0], [-1.0, 0.5], [0.5, -2.0]])
    run = save_run(tmp_path / "run", margins, [0, 1, 2, 3], rm_seed=0)
    out = subprocess.run([sys.executable, str(BENCH / "reward_spread.py"), "--runs", str(run), "--k", "2"],
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["ensembles"] == [0] and result["pairs"] == 4
    # mean margins 1.5, 2.0, -0.25, -0.75: right, right, wrong, wrong -> confident half 1.0, unsure half 0.0
    assert result["agreement"]["per_ensemble"] == [1.0] and result["agreement"]["mean"] == 1.0
    assert result["margin"]["minus_margin"] == 0.0
    assert result["accuracy_mean"] == 0.5
