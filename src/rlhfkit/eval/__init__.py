"""rlhfkit.eval: metrics, the over-optimization watch, per-round evaluation and the HTML report.

- metrics: distinct-n, lengths, BLEU/ROUGE, win rate with CI, KL summaries, correlations.
- overoptimization: check_overoptimization -> ok / warn / stop and the round to roll back to.
- collapse: the watch's diversity, length and off-topic signals relative to the base policy.
- evaluate: evaluate_responses -> the flat ``eval/*`` metrics of one round.
- report: build_report(run_dir) -> a self-contained HTML page (layout in run_layout.md).
- checks: the report's gold-aspect table and its collapse and independent-judge checks.
"""
