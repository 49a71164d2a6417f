"""MKL's memory manager is off in rlhfkit's processes: it kept every GEMM shape's buffers for the process's life."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rlhfkit.utils.memory import mkl_cached_bytes

PROBE = ("import os, rlhfkit, torch; from rlhfkit.utils.memory import mkl_cached_bytes; "
         "torch.randn(256, 128) @ torch.randn(128, 512); "
         "print(repr(os.environ.get('MKL_DISABLE_FAST_MM')), mkl_cached_bytes())")


def _probe(env_update: dict[str, str]) -> tuple[str, int]:
    env = {key: value for key, value in os.environ.items() if key != "MKL_DISABLE_FAST_MM"}
    env.update(env_update)
    setting, cached = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                                     timeout=120, check=True).stdout.split()
    return setting, int(cached)


@pytest.fixture(autouse=True)
def _needs_mkl() -> None:
    if mkl_cached_bytes() is None:
        pytest.skip("torch without MKL")


def test_importing_rlhfkit_before_torch_turns_mkl_buffer_caching_off() -> None:
    assert _probe({}) == ("'1'", 0)


def test_an_empty_setting_keeps_mkl_caching() -> None:
    setting, cached = _probe({"MKL_DISABLE_FAST_MM": ""})
    assert setting == "''" and cached > 0  # the control: the probe's product does get cached when the manager is on
