"""``--reward-fn path/file.py:function`` loads a file the way Python runs a script (issue 14)."""

from __future__ import annotations

import sys

import pytest

from rlhfkit.rl.rewards import RewardError, load_function


@pytest.fixture
def clean_path(monkeypatch):
    """sys.path and sys.modules restored after the test, so loaded helper modules do not leak."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        sys.modules.pop(name, None)


def test_file_imports_a_module_beside_it(tmp_path, clean_path):
    (tmp_path / "qa_exact_helper.py").write_text("def exact(a, b):\n    return float(a == b)\n")
    (tmp_path / "qa_lazy_helper.py").write_text("BONUS = 0.5\n")
    (tmp_path / "my_reward.py").write_text(
        "from qa_exact_helper import exact\n\n"
        "def score(prompts, responses):\n"
        "    import qa_lazy_helper\n"
        "    return [exact(p, r) + qa_lazy_helper.BONUS for p, r in zip(prompts, responses)]\n")
    fn = load_function(f"{tmp_path / 'my_reward.py'}:score")
    assert fn(["a", "b"], ["a", "c"]) == [1.5, 0.5]


def test_error_names_the_file_and_the_missing_module(tmp_path, clean_path):
    (tmp_path / "my_reward.py").write_text("import qa_exact_absent\n\ndef score(p, r):\n    return [0.0]\n")
    with pytest.raises(RewardError) as info:
        load_function(f"{tmp_path / 'my_reward.py'}:score")
    message = str(info.value)
    assert f"{tmp_path / 'my_reward.py'} imports 'qa_exact_absent'" in message
    assert str(tmp_path) in sys.path  # the file's folder stays importable for lazy imports
