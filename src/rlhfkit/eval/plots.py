"""Report figures drawn with matplotlib's Agg canvas and returned as inline ``data:image/png`` URIs.

Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot), so drawing touches no
global backend state and works on headless machines.
"""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

GOLD, PROXY, KL, ACCENT, MUTED = "#d08c00", "#2f6db5", "#6b4fa3", "#2e8b57", "#9aa5b1"
F = TypeVar("F", bound=Callable[..., Any])


def plain_text(fn: F) -> F:
    """Draw with mathtext off: labels carry user text (annotator and judge names), and matplotlib
    would parse ``$...$`` in them as math, failing the whole report on a name it cannot parse."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with rc_context({"text.parse_math": False}):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    """A white figure with ``ncols`` lightly styled axes."""
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(1, ncols, squeeze=False)[0])
    for ax in axes:
        ax.grid(True, color="#e6e9ed", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.tick_params(labelsize=8)
    return fig, axes


def to_data_uri(fig: Figure) -> str:
    """PNG bytes of a figure as a base64 ``data:`` URI for an <img src>."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


Series = tuple[Sequence[float], Sequence[float]]


@plain_text
def rewards_kl_plot(gold: Series | None, proxy: Series | None, kl: Series | None,
                    train_reward: Series | None = None, train_kl: Series | None = None,
                    x_label: str = "policy step") -> str | None:
    """Left: gold (left axis) and proxy reward (right axis); right: KL to the reference.

    Gold and proxy live on different scales, hence the twin axes. None when nothing to draw.
    """
    if not any(s and len(s[0]) for s in (gold, proxy, kl, train_reward, train_kl)):
        return None
    fig, (left, right) = _figure(9.6, 3.3, ncols=2)
    handles = []
    if gold and len(gold[0]):
        handles += left.plot(gold[0], gold[1], "o-", color=GOLD, lw=2, ms=4, label="gold reward")
        left.set_ylabel("gold reward", color=GOLD, fontsize=9)
    else:
        left.set_yticks([])
    twin = left.twinx()
    twin.spines["top"].set_visible(False)
    twin.tick_params(labelsize=8)
    if train_reward and len(train_reward[0]):
        handles += twin.plot(train_reward[0], train_reward[1], "-", color=PROXY, lw=0.8,
                             alpha=0.35, label="proxy (training)")
    if proxy and len(proxy[0]):
        handles += twin.plot(proxy[0], proxy[1], "s--", color=PROXY, lw=1.8, ms=4,
                             label="proxy reward (RM)")
    if handles and any(h.get_color() == PROXY for h in handles):
        twin.set_ylabel("proxy reward (RM score)", color=PROXY, fontsize=9)
    else:
        twin.set_yticks([])
    left.set_title("Gold vs proxy reward", fontsize=10)
    left.set_xlabel(x_label, fontsize=9)
    if handles:
        left.legend(handles=handles, fontsize=8, loc="best", frameon=False)
    kl_handles = []
    if train_kl and len(train_kl[0]):
        kl_handles += right.plot(train_kl[0], train_kl[1], "-", color=KL, lw=0.8, alpha=0.35,
                                 label="KL (training)")
    if kl and len(kl[0]):
        kl_handles += right.plot(kl[0], kl[1], "o-", color=KL, lw=2, ms=4, label="KL (eval)")
    for ax in (left, right):  # steps and rounds are both whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_title("KL(policy || reference)", fontsize=10)
    right.set_xlabel(x_label, fontsize=9)
    right.set_ylabel("nats per sequence", fontsize=9)
    if kl_handles:
        right.legend(fontsize=8, loc="best", frameon=False)
    else:
        right.text(0.5, 0.5, "no KL logged", ha="center", va="center", color=MUTED,
                   transform=right.transAxes)
    return to_data_uri(fig)


def _annotate_bars(ax: Axes, bars: object) -> None:
    """Write each bar's value above it."""
    for bar in bars:  # type: ignore[attr-defined]
        height = bar.get_height()
        ax.text(bar.get_x() + bar.get_width() / 2, height + 0.02, f"{height:.2f}",
                ha="center", va="bottom", fontsize=7, clip_on=False)


@plain_text
def rm_accuracy_plot(rounds: Sequence[int], accuracy: Sequence[float],
                     gold_accuracy: Sequence[float | None] | None = None) -> str | None:
    """Grouped bars per round: held-out accuracy and (optionally) agreement with gold; chance 0.5."""
    if not rounds:
        return None
    fig, (ax,) = _figure(4.8, 3.0)
    x = list(range(len(rounds)))
    has_gold = gold_accuracy is not None and any(g is not None for g in gold_accuracy)
    width = 0.38 if has_gold else 0.6
    shift = width / 2 if has_gold else 0.0
    bars = ax.bar([i - shift for i in x], accuracy, width, color=PROXY, label="held-out feedback")
    _annotate_bars(ax, bars)
    if has_gold:
        assert gold_accuracy is not None
        gx = [i + shift for i, g in zip(x, gold_accuracy) if g is not None]
        gv = [g for g in gold_accuracy if g is not None]
        _annotate_bars(ax, ax.bar(gx, gv, width, color=GOLD, label="agreement with gold"))
    ax.axhline(0.5, color=MUTED, ls=":", lw=1)
    ax.set_xticks(x, [str(r) for r in rounds])
    ax.set_xlabel("round", fontsize=9)
    ax.set_ylabel("pairwise accuracy", fontsize=9)
    ax.set_ylim(0, 1.0)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    fig.legend(fontsize=8, frameon=False, loc="outside lower center", ncol=2)
    return to_data_uri(fig)


@dataclass(frozen=True)
class WinRateSeries:
    """One judge's win rate per round (gold, a judge function, or annotators) with its interval."""

    label: str
    rounds: Sequence[int]
    rate: Sequence[float]
    low: Sequence[float | None]
    high: Sequence[float | None]


@plain_text
def win_rate_plot(series: Sequence[WinRateSeries]) -> str | None:
    """Win rate against the base policy per round, one line per judge, with confidence-interval bars."""
    series = [s for s in series if s.rounds]
    if not series:
        return None
    fig, (ax,) = _figure(4.8, 3.0)
    colors = (ACCENT, PROXY, GOLD, KL)
    offsets = [0.06 * (i - (len(series) - 1) / 2) for i in range(len(series))]
    for s, color, offset in zip(series, colors, offsets):
        xs = [r + offset for r in s.rounds]
        lower = [r - lo if lo is not None else 0.0 for r, lo in zip(s.rate, s.low)]
        upper = [hi - r if hi is not None else 0.0 for r, hi in zip(s.rate, s.high)]
        ax.errorbar(xs, s.rate, yerr=[lower, upper], fmt="o-", color=color, ecolor=color,
                    capsize=4, lw=1.8, ms=5, label=s.label)
        for x, v in zip(xs, s.rate):
            ax.annotate(f"{v:.2f}", (x, v), textcoords="offset points", xytext=(8, -3), fontsize=7)
    ax.axhline(0.5, color=MUTED, ls=":", lw=1)
    ax.set_ylim(0, 1.05)
    ax.set_xticks(sorted({r for s in series for r in s.rounds}))
    ax.set_xlabel("round", fontsize=9)
    ax.set_ylabel("win rate vs base (ties = 1/2)", fontsize=9)
    if len(series) > 1:
        ax.legend(fontsize=7, loc="lower right", frameon=False)
    return to_data_uri(fig)


@plain_text
def reliability_plot(names: Sequence[str], estimated: Sequence[float],
                     true_accuracy: Sequence[float | None] | None = None) -> str | None:
    """Horizontal bars of each annotator's estimated reliability (and known accuracy if given)."""
    if not names:
        return None
    height = 1.0 + 0.32 * len(names)
    fig, (ax,) = _figure(6.4, min(max(height, 2.2), 9.0))
    y = list(range(len(names)))
    has_true = true_accuracy is not None and any(t is not None for t in true_accuracy)
    bar_h = 0.38 if has_true else 0.6
    shift = bar_h / 2 if has_true else 0.0
    ax.barh([i - shift for i in y], estimated, bar_h, color=PROXY, label="estimated reliability")
    if has_true:
        assert true_accuracy is not None
        ty = [i + shift for i, t in zip(y, true_accuracy) if t is not None]
        tv = [t for t in true_accuracy if t is not None]
        ax.barh(ty, tv, bar_h, color=GOLD, label="true accuracy (simulated)")
    for i, v in zip(y, estimated):
        ax.text(v + 0.01, i - shift, f"{v:.2f}", va="center", fontsize=7)
    ax.set_yticks(y, list(names))
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("reliability", fontsize=9)
    fig.legend(fontsize=8, frameon=False, loc="outside lower center", ncol=2)
    return to_data_uri(fig)
