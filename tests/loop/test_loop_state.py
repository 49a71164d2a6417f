"""The loop's state machine: phase order, round advance, on-disk round trip and validation."""

from __future__ import annotations

import json

import pytest

from rlhfkit.loop.state import (BASELINE_PHASES, ROUND_PHASES, LoopState, RunPaths, StateError, load_state,
                                phases_of, save_state, state_path)


def test_round_zero_only_evaluates_and_later_rounds_run_every_phase():
    assert phases_of(0) == BASELINE_PHASES == ("evaluate", "checkpoint")
    assert phases_of(3) == ROUND_PHASES
    assert ROUND_PHASES[0] == "generate" and ROUND_PHASES[-1] == "checkpoint"


def test_phases_complete_in_order_then_the_round_advances():
    state = LoopState()
    assert state.next_phase() == "evaluate"
    state.complete("evaluate")
    with pytest.raises(StateError, match="next one is 'checkpoint'"):
        state.complete("evaluate")
    with pytest.raises(StateError, match="still has phase 'checkpoint'"):
        state.advance()
    state.complete("checkpoint")
    assert state.next_phase() is None
    state.advance()
    assert (state.round, state.done, state.next_phase()) == (1, [], "generate")
    for phase in ROUND_PHASES[:4]:
        state.complete(phase)
    assert state.next_phase() == "aggregate" and state.is_done("collect") and not state.is_done("aggregate")


def test_skipping_a_phase_is_refused():
    state = LoopState(round=2)
    with pytest.raises(StateError, match="cannot finish phase 'select'"):
        state.complete("select")


def test_state_round_trips_through_disk(tmp_path):
    assert load_state(tmp_path) is None
    state = LoopState(run_id="r-1", round=2, done=["generate", "select"], base_model="/m", policy="/p",
                      campaign_ids=[1, 2], global_step=32)
    save_state(tmp_path, state)
    assert load_state(tmp_path) == state
    assert not list(tmp_path.glob(".state.json.tmp-*"))


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(version=99), "state version 99"),
    (lambda d: d.update(colour="blue"), "unknown field"),
    (lambda d: d.update(done=["select"]), "expected a prefix"),
    (lambda d: d.update(round=0, done=["generate"]), "expected a prefix"),
])
def test_bad_state_files_name_the_file_and_the_problem(tmp_path, edit, message):
    data = LoopState(round=1, done=["generate"]).to_dict()
    edit(data)
    state_path(tmp_path).write_text(json.dumps(data))
    with pytest.raises(StateError, match=message) as info:
        load_state(tmp_path)
    assert str(state_path(tmp_path)) in str(info.value)


def test_unreadable_state_file(tmp_path):
    state_path(tmp_path).write_text("{half")
    with pytest.raises(StateError, match="unreadable state"):
        load_state(tmp_path)


def test_run_paths_follow_the_report_layout(tmp_path):
    paths = RunPaths(tmp_path)
    assert paths.round_dir(7) == tmp_path / "rounds" / "round-007"
    assert paths.candidates(1).parent == paths.round_dir(1)
    assert paths.policy_dir(2).name == "policy" and paths.reward_dir(2).name == "reward"


def test_a_finished_round_recorded_before_the_compare_phase_still_loads():
    old_phases = [p for p in ROUND_PHASES if p != "compare"]
    state = LoopState.from_dict({**LoopState(round=2).to_dict(), "done": old_phases})
    assert state.done == list(ROUND_PHASES) and state.next_phase() is None
    half = LoopState.from_dict({**LoopState(round=2).to_dict(), "done": old_phases[: old_phases.index("evaluate") + 1]})
    assert half.next_phase() == "compare"
