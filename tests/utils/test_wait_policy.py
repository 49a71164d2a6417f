"""The OpenMP wait policy is passive in rlhfkit's processes: set at import, before torch loads libgomp."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = ("import sys, os, rlhfkit; "
         "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")


def _probe(env_update: dict[str, str]) -> str:
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    env.update(env_update)
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120,
                          check=True).stdout.strip()


def test_importing_rlhfkit_sets_a_passive_policy_before_torch_loads() -> None:
    assert _probe({}) == "PASSIVE False"  # set, and torch not loaded yet: libgomp will read it


def test_a_policy_the_user_set_is_kept() -> None:
    assert _probe({"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE False"
