"""The HTML report: built from a synthetic run directory, checked as text and in headless Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rlhfkit.eval.report import build_report
from rlhfkit.utils.tracking import Tracker

CHROMIUM = Path("/usr/bin/chromium")
EVIL = '<script>alert("x")</script> & <b>bold</b>'


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_run_dir(root: Path, n_rounds: int = 3) -> Path:
    """A run directory following run_layout.md, with a hostile sample and an over-optimized tail."""
    run = root / "loop-run"
    gold = [0.10, 0.35, 0.52, 0.38]
    proxy = [0.0, 0.8, 1.5, 2.4]
    with Tracker(run, report_to="none", config={"task": "sentiment", "rounds": n_rounds,
                                                 "note": "</pre><i>cfg</i>"}) as tracker:
        step = 0
        for rnd in range(n_rounds + 1):
            if rnd > 0:
                for _ in range(5):
                    step += 1
                    tracker.log({"reward/mean": proxy[rnd - 1] + 0.2 * step / 5, "kl/mean": 0.3 * step},
                                step=step)
            tracker.log({"eval/gold_reward": gold[rnd], "eval/proxy_reward": proxy[rnd],
                         "eval/kl": 0.25 * step}, step=step)
    for rnd in range(n_rounds + 1):
        folder = run / "rounds" / f"round-{rnd:03d}"
        folder.mkdir(parents=True)
        metrics = {"eval/gold_reward": gold[rnd], "eval/proxy_reward": proxy[rnd], "eval/kl": 1.2 * rnd,
                   "eval/distinct_2": 0.8 - 0.1 * rnd}
        if rnd > 0:
            metrics.update({"eval/win_rate": 0.5 + 0.1 * rnd, "eval/win_rate_low": 0.35 + 0.1 * rnd,
                            "eval/win_rate_high": 0.65 + 0.1 * rnd, "eval/win_rate_n": 32})
            (folder / "rm_eval.json").write_text(json.dumps(
                {"accuracy": 0.6 + 0.05 * rnd, "gold_accuracy": 0.55 + 0.05 * rnd, "n": 40}))
            (folder / "annotator_reliability.json").write_text(json.dumps(
                [{"annotator": f"sim-{i}", "reliability": 0.95 - 0.2 * i, "n": 30,
                  "true_accuracy": 0.9 - 0.2 * i} for i in range(3)]))
            policy = folder / "policy"
            policy.mkdir()
            _write_jsonl(policy / "metrics.jsonl", [{"step": 1, "loss/policy": 0.1}])
        (folder / "metrics.json").write_text(json.dumps(metrics))
        samples = [{"prompt": f"Review {i}:", "response": f"round {rnd} answer {i}", "gold": gold[rnd],
                    "proxy": proxy[rnd]} for i in range(3)]
        if rnd == 0:
            samples[0]["response"] = EVIL
        _write_jsonl(folder / "samples_after.jsonl", samples)
    return run


def test_report_has_plots_and_escapes_text(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path)
    path = build_report(run)
    assert path == run / "report.html"
    html = path.read_text(encoding="utf-8")
    images = re.findall(r'<img class="plot" alt="([^"]+)" src="data:image/png;base64,', html)
    assert len(images) == 4, images  # rewards/KL, RM accuracy, win rate, reliability
    assert "<script" not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "&lt;/pre&gt;&lt;i&gt;cfg&lt;/i&gt;" in html
    assert "http://" not in html and "https://" not in html  # self-contained
    assert 'class="badge stop"' in html  # gold fell 0.52 -> 0.38 (> 0.1 below its best)
    assert "roll back to round 2" in html
    assert "<th class=\"num\">round 3</th>" in html and "eval/distinct_2" in html
    assert "rounds/round-001/policy/metrics.jsonl" in html
    assert "Not available" not in html


def test_missing_pieces_degrade_gracefully(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    html = build_report(empty).read_text(encoding="utf-8")
    assert "<img" not in html
    assert html.count("Not available") >= 6 and "Summary not available" in html

    broken = tmp_path / "broken"
    (broken / "rounds" / "round-001").mkdir(parents=True)
    (broken / "config.json").write_text("{not json")
    (broken / "rounds" / "round-001" / "metrics.json").write_text('{"eval/gold_reward": 0.3}')
    (broken / "rounds" / "round-001" / "rm_eval.json").write_text("[1, 2]")
    _write_jsonl(broken / "rounds" / "round-001" / "samples_after.jsonl", [{"prompt": "p"}])
    with (broken / "metrics.jsonl").open("w") as fh:
        fh.write('{"step": 1, "eval/gold_reward": "nan"}\nnot json\n')
    html = build_report(broken, output=tmp_path / "out" / "r.html").read_text(encoding="utf-8")
    assert "config.json</code>: unreadable" in html
    assert "rm_eval.json</code>: expected a JSON dict, got list" in html
    assert "metrics.jsonl</code>: skipped malformed line(s) [2]" in html
    assert html.count("<img") == 1  # falls back to the per-round gold reward


def test_missing_run_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        build_report(tmp_path / "does-not-exist")


@pytest.mark.browser
@pytest.mark.slow
def test_report_images_decode_in_chromium(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    path = build_report(make_run_dir(tmp_path))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            requests: list[str] = []
            dialogs: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            sizes = page.eval_on_selector_all(
                "img.plot", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
            sample_text = page.inner_text("table.samples")
        finally:
            browser.close()
    assert len(sizes) == 4
    assert all(done and w > 200 and h > 100 for done, w, h in sizes), sizes
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert dialogs == []  # the hostile sample's script never ran
    assert EVIL in sample_text  # shown literally, not interpreted
