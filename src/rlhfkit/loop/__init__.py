"""rlhfkit.loop: the RLHF loop, round after round, resumable at any phase.

- config:   LoopConfig (one dataclass per phase; the defaults are `rlhfkit demo`)
- state:    LoopState on disk (round, finished phases, paths) and the run-directory layout
- runner:   run_rlhf_loop(config, resume=...) -- the spine; load_loop_config(yaml, ["key=value"])
- phases:   generate -> select -> campaign -> collect -> aggregate -> reward -> policy -> evaluate -> checkpoint
- server:   the feedback server the loop talks to (its own uvicorn thread, or an external URL)
- collect, aggregate, selection, candidates, scoring, reward_phase, policy_phase, evaluate_phase, summary:
  what each phase does, as small functions
"""
