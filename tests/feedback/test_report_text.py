"""User text in report figures is drawn as text: a `$...$` annotator name must not crash `rlhfkit report`."""

from __future__ import annotations

from rlhfkit.eval.plots import WinRateSeries, reliability_plot, win_rate_plot


def test_dollar_signs_in_annotator_and_judge_names_are_plain_text() -> None:
    names = ["$\\frac{1}{$", "a $x^$ b", "$$", "plain"]
    uri = reliability_plot(names, [0.9, 0.8, 0.7, 0.6], [0.95, None, 0.5, 0.4])
    assert uri is not None and uri.startswith("data:image/png;base64,")
    series = [WinRateSeries(label="$\\undefinedmacro$", rounds=[0, 1], rate=[0.5, 0.6], low=[0.4, None], high=[0.6, None]),
              WinRateSeries(label="judge", rounds=[0, 1], rate=[0.5, 0.7], low=[None, None], high=[None, None])]
    assert win_rate_plot(series) is not None
