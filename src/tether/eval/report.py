"""``tether report``: one self-contained HTML page a person reads first.

Everything comes from the files the stages wrote in the run directory — ``metrics.jsonl``,
``<stage>_heldout.json`` (held-out curve and alarm events), ``rm/eval_report.json``,
``*.stats.json`` (annotator agreement), ``eval.json`` / ``eval_samples.jsonl``,
``frontier.json``, ``summary.json`` and ``config.yaml`` — so a report can be rebuilt at any
time. Charts are inline SVG drawn here (no JavaScript, no CDN, no images to fetch); every
piece of text from a model or a file is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from tether.config import ReportConfig
from tether.recipes.common import atomic_write_text
from tether.utils.logging import console

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]
RL_CURVES = [("reward/score_mean", "proxy reward (train batch)"), ("objective/kl", "KL to reference (nats)"),
             ("objective/kl_coef", "KL coefficient β"), ("response/length_mean", "response length (tokens)"),
             ("objective/entropy", "entropy (nats/token)")]
TRAIN_CURVES = [("loss", "training loss"), ("eval/loss", "held-out loss")]

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.muted{color:#666}.charts{display:flex;flex-wrap:wrap;gap:1em}.chart{border:1px solid #eee;border-radius:6px}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}.alarm{background:#fdecea;border-left:4px solid #d62728;
padding:.5em 1em;margin:.5em 0}.ok{background:#eaf6ec;border-left:4px solid #2ca02c;padding:.5em 1em}
.answers td{max-width:360px;white-space:pre-wrap;font-size:.92em}pre{background:#f6f6f8;padding:1em;overflow:auto}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


def _ticks(lo: float, hi: float) -> tuple[float, float]:
    if lo == hi:
        pad = abs(lo) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def svg_chart(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, width: int = 520,
              height: int = 280, markers: bool = False, vlines: list[float] | None = None) -> str:
    """A line chart as inline SVG: one polyline per series, min/max ticks, a legend, optional vertical marks."""
    points = [(x, y) for pts in series.values() for x, y in pts if math.isfinite(x) and math.isfinite(y)]
    if not points:
        return ""
    left, right, top, bottom = 62, 14, 28, 42
    x0, x1 = _ticks(min(p[0] for p in points), max(p[0] for p in points))
    y0, y1 = _ticks(min(p[1] for p in points), max(p[1] for p in points))
    sx = lambda x: left + (x - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
    sy = lambda y: height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)  # noqa: E731
    parts = [f"<svg class='chart' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"role='img' aria-label='{esc(title)}'>",
             f"<text x='{width / 2}' y='17' text-anchor='middle' font-size='13' font-weight='bold'>{esc(title)}</text>",
             f"<line x1='{left}' y1='{height - bottom}' x2='{width - right}' y2='{height - bottom}' stroke='#888'/>",
             f"<line x1='{left}' y1='{top}' x2='{left}' y2='{height - bottom}' stroke='#888'/>"]
    for value in (y0, (y0 + y1) / 2, y1):
        parts.append(f"<text x='{left - 4}' y='{sy(value) + 4:.1f}' text-anchor='end' font-size='10'>{value:.3g}</text>")
        parts.append(f"<line x1='{left}' y1='{sy(value):.1f}' x2='{width - right}' y2='{sy(value):.1f}' "
                     "stroke='#eee'/>")
    for value in (x0, (x0 + x1) / 2, x1):
        parts.append(f"<text x='{sx(value):.1f}' y='{height - bottom + 14}' text-anchor='middle' "
                     f"font-size='10'>{value:.3g}</text>")
    parts.append(f"<text x='{(left + width - right) / 2}' y='{height - 8}' text-anchor='middle' "
                 f"font-size='11'>{esc(xlabel)}</text>")
    for value in vlines or []:
        parts.append(f"<line x1='{sx(value):.1f}' y1='{top}' x2='{sx(value):.1f}' y2='{height - bottom}' "
                     "stroke='#d62728' stroke-dasharray='4 3'/>")
    for i, (name, pts) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        clean = [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
        if not clean:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in clean)
        parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='1.8' points='{path}'/>")
        if markers or len(clean) == 1:
            parts += [f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='3' fill='{color}'/>" for x, y in clean]
        if len(series) > 1:
            parts.append(f"<rect x='{left + 8}' y='{top + 4 + 14 * i}' width='10' height='3' fill='{color}'/>"
                         f"<text x='{left + 22}' y='{top + 9 + 14 * i}' font-size='10'>{esc(name)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _metrics_by_stage(run_dir: Path) -> dict[str, list[dict]]:
    stages: dict[str, list[dict]] = defaultdict(list)
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash: skip it, keep the rest
            stages[row.get("stage", "?")].append(row)
    return stages


def _curves(rows: list[dict], keys: list[tuple[str, str]]) -> list[str]:
    charts = []
    for key, title in keys:
        pts = [(float(r["step"]), float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]
        if len(pts) >= 1:
            charts.append(svg_chart({key: pts}, title, "step"))
    return charts


def _section_summary(run_dir: Path) -> str:
    summary = _read_json(run_dir / "summary.json")
    if not isinstance(summary, dict):
        return ""
    headline = summary.get("headline") or {}
    rows = "".join(f"<tr><th>{esc(k)}</th><td class='num'>{fmt(v)}</td></tr>" for k, v in headline.items())
    seconds = summary.get("seconds") or {}
    times = "".join(f"<tr><th>{esc(k)}</th><td class='num'>{fmt(float(v), 1)} s</td></tr>" for k, v in seconds.items())
    out = "<h2 id='summary'>Summary</h2>"
    if rows:
        out += f"<table id='headline'>{rows}</table>"
    if times:
        out += f"<h3>Time per stage</h3><table id='timings'>{times}</table>"
    return out


def _section_heldout(run_dir: Path) -> str:
    out = []
    for path in sorted(run_dir.glob("*_heldout.json")):
        data = _read_json(path)
        if not isinstance(data, dict) or not data.get("points"):
            continue
        stage = path.name[: -len("_heldout.json")]
        points, alarms = data["points"], data.get("alarms", [])
        alarm_its = [float(a["iteration"]) for a in alarms]
        out.append(f"<h3>{esc(stage)}: held-out reward during training ({data.get('prompts')} prompts, "
                   f"gold = <code>{esc(data.get('gold'))}</code>)</h3>")
        if alarms:
            out += [f"<div class='alarm'><b>Reward-hacking alarm</b> — {esc(a['rule'])} at iteration "
                    f"{esc(a['iteration'])}: {esc(a['message'])}</div>" for a in alarms]
        else:
            out.append("<div class='ok'>No reward-hacking alarm: the held-out gold reward did not fall while the "
                       "proxy rose, and length and repetition stayed in line with the reference.</div>")
        its = [float(p["iteration"]) for p in points]
        charts = [
            svg_chart({"proxy": list(zip(its, [p["proxy"] for p in points])),
                       "gold": list(zip(its, [p["gold"] for p in points]))},
                      "held-out proxy vs gold reward", "iteration", markers=True, vlines=alarm_its),
            svg_chart({"proxy": [(p["kl"], p["proxy"]) for p in points], "gold": [(p["kl"], p["gold"]) for p in points]},
                      "reward vs KL to the reference", "KL (nats)", markers=True),
            svg_chart({"length": list(zip(its, [p["length"] for p in points]))}, "held-out response length",
                      "iteration", markers=True),
        ]
        out.append("<div class='charts'>" + "".join(charts) + "</div>")
    return ("<h2 id='alarm'>Held-out evaluation and reward-hacking alarm</h2>" + "".join(out)) if out else ""


def _section_training(stages: dict[str, list[dict]]) -> str:
    out = []
    for stage, rows in stages.items():
        is_rl = any("objective/kl" in r for r in rows)
        charts = _curves([r for r in rows if r.get("step", 0) > 0 or not is_rl], RL_CURVES if is_rl else TRAIN_CURVES)
        if is_rl:
            charts += _curves(rows, [("reward/gold_mean", "gold reward (train batch)")])
        if charts:
            out.append(f"<h3>{esc(stage)}</h3><div class='charts'>{''.join(charts)}</div>")
    return ("<h2 id='training'>Training curves</h2>" + "".join(out)) if out else ""


def _section_frontier(run_dir: Path) -> str:
    data = _read_json(run_dir / "frontier.json")
    if not isinstance(data, dict) or not data.get("points"):
        return ""
    by_method: dict[str, list[dict]] = defaultdict(list)
    for p in data["points"]:
        by_method[p.get("method", "?")].append(p)
    series = {}
    for method, pts in by_method.items():
        pts = sorted(pts, key=lambda p: p["kl"])
        series[f"{method} proxy"] = [(p["kl"], p["proxy"]) for p in pts if p.get("proxy") is not None]
        series[f"{method} gold"] = [(p["kl"], p["gold"]) for p in pts if p.get("gold") is not None]
    rows = "".join(f"<tr><td>{esc(p.get('method'))}</td><td>{esc(p.get('setting'))}</td><td class='num'>{fmt(p['kl'])}"
                   f"</td><td class='num'>{fmt(p.get('proxy'))}</td><td class='num'>{fmt(p.get('gold'))}</td></tr>"
                   for p in data["points"])
    return ("<h2 id='frontier'>Reward vs KL frontier</h2>" + svg_chart(series, "reward vs KL", "KL (nats)", 640, 320,
                                                                       markers=True)
            + "<table><tr><th>method</th><th>setting</th><th>KL</th><th>proxy</th><th>gold</th></tr>" + rows
            + "</table>")


def _section_reward_model(run_dir: Path) -> str:
    out = []
    for path in sorted(run_dir.glob("*/eval_report.json")):
        rep = _read_json(path)
        if not isinstance(rep, dict) or "accuracy" not in rep:
            continue
        bins = [b for b in rep.get("calibration", []) if b.get("count")]
        diag = [(b["lo"], b["lo"]) for b in rep.get("calibration", [])] + [(1.0, 1.0)]
        chart = svg_chart({"observed": [(b["mean_predicted"], b["observed"]) for b in bins], "ideal": diag},
                          "calibration: observed vs predicted win rate", "predicted", markers=True) if bins else ""
        out.append(
            f"<h3>{esc(path.parent.name)}</h3><table><tr><th>held-out accuracy</th><td class='num'>{fmt(rep['accuracy'])}"
            f"</td></tr><tr><th>\"longer response wins\" baseline</th><td class='num'>"
            f"{fmt(rep.get('length_baseline_accuracy'))}</td></tr><tr><th>reward–length correlation</th>"
            f"<td class='num'>{fmt(rep.get('reward_length_correlation'))}</td></tr><tr><th>calibration error (ECE)</th>"
            f"<td class='num'>{fmt(rep.get('calibration_ece'))}</td></tr><tr><th>pairs</th><td class='num'>"
            f"{fmt(rep.get('n_pairs'))}</td></tr></table>{chart}")
    return ("<h2 id='reward-model'>Reward model</h2>" + "".join(out)) if out else ""


def _section_labels(run_dir: Path) -> str:
    out = []
    for path in sorted(run_dir.glob("*.stats.json")):
        rep = _read_json(path)
        if not isinstance(rep, dict) or "annotators" not in rep:
            continue
        rows = "".join(f"<tr><td>{esc(n)}</td><td class='num'>{fmt(a.get('labels'))}</td><td class='num'>"
                       f"{fmt(a.get('gold_accuracy'))}</td><td class='num'>{fmt(a.get('estimated_accuracy'))}</td></tr>"
                       for n, a in rep["annotators"].items())
        out.append(f"<h3>{esc(path.name)}</h3><p>{fmt(rep.get('labels'))} labels on {fmt(rep.get('items'))} items; "
                   f"pairwise agreement {fmt(rep.get('pairwise_agreement'))}, Fleiss' κ {fmt(rep.get('fleiss_kappa'))}, "
                   f"Krippendorff's α {fmt(rep.get('krippendorff_alpha'))}; gold-question accuracy of majority vote "
                   f"{fmt(rep.get('majority_gold_accuracy'))}, of Dawid–Skene {fmt(rep.get('dawid_skene_gold_accuracy'))}"
                   "</p><table><tr><th>annotator</th><th>labels</th><th>gold accuracy</th><th>estimated accuracy</th>"
                   f"</tr>{rows}</table>")
    return ("<h2 id='labels'>Annotators</h2>" + "".join(out)) if out else ""


def _section_eval(run_dir: Path, max_samples: int) -> str:
    data = _read_json(run_dir / "eval.json")
    if not isinstance(data, dict) or not data.get("models"):
        return ""
    cols = [("proxy", "proxy_mean"), ("gold", "gold_mean"), ("KL", "kl_mean"), ("win vs ref", "win_rate_vs_reference"),
            ("length", "length_mean"), ("EOS", "eos_rate"), ("distinct-1", "distinct_1"), ("distinct-2", "distinct_2"),
            ("self-BLEU", "self_bleu"), ("perplexity", "perplexity"), ("MC accuracy", "mc_accuracy")]
    head = "".join(f"<th>{esc(t)}</th>" for t, _ in cols)
    rows = "".join(f"<tr><td>{esc(name)}</td>" + "".join(f"<td class='num'>{fmt(m.get(k))}</td>" for _, k in cols)
                   + "</tr>" for name, m in data["models"].items())
    out = (f"<h2 id='eval'>Held-out evaluation</h2><p class='muted'>{fmt(data.get('prompts'))} held-out prompts; "
           f"reference {esc(data.get('reference'))}; proxy <code>{esc(data.get('reward'))}</code>, gold "
           f"<code>{esc(data.get('gold'))}</code>. KL is Σ log π − log π_ref on each policy's own samples; win-rate is "
           "judged by the low-noise held-out evaluator; perplexity and multiple-choice accuracy measure the alignment "
           f"tax.</p><table id='eval-table'><tr><th>model</th>{head}</tr>{rows}</table>")
    samples_path = run_dir / "eval_samples.jsonl"
    if samples_path.is_file():
        samples = [json.loads(line) for line in samples_path.read_text(encoding="utf-8").splitlines()[:max_samples]
                   if line.strip()]
        names = list(data["models"])
        head = "".join(f"<th>{esc(n)}</th>" for n in names)
        body = "".join("<tr><td>" + esc(s["prompt"]) + "</td>" + "".join(
            f"<td>{esc(s['responses'].get(n, ''))}</td>" for n in names) + "</tr>" for s in samples)
        out += (f"<h3>The same prompts answered by each model</h3><table class='answers' id='answers'><tr><th>prompt"
                f"</th>{head}</tr>{body}</table>")
    return out


def build_report(run_dir: Path, title: str = "", max_samples: int = 12) -> str:
    """The report's HTML for ``run_dir``."""
    stages = _metrics_by_stage(run_dir)
    sections = [_section_summary(run_dir), _section_heldout(run_dir), _section_eval(run_dir, max_samples),
                _section_frontier(run_dir), _section_training(stages), _section_reward_model(run_dir),
                _section_labels(run_dir)]
    config = run_dir / "config.yaml"
    if config.is_file():
        sections.append("<h2 id='config'>Configuration</h2><details><summary>config.yaml (every stage, fully "
                        f"resolved)</summary><pre>{esc(config.read_text(encoding='utf-8'))}</pre></details>")
    body = "".join(s for s in sections if s) or "<p>Nothing to report yet: this run directory has no outputs.</p>"
    name = title or run_dir.resolve().name
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
            "content='width=device-width, initial-scale=1'>"
            "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:\">"
            f"<title>{esc(name)} — tether report</title><style>{STYLE}</style></head><body>"
            f"<h1>{esc(name)}</h1><p class='muted'>tether report for <code>{esc(run_dir.resolve())}</code>, written "
            f"{esc(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>{body}</body></html>")


def write_report(cfg: ReportConfig) -> Path:
    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        from tether.data import DataError

        raise DataError(f"run directory {run_dir} does not exist")
    output = Path(cfg.output) if cfg.output else run_dir / "report.html"
    atomic_write_text(output, build_report(run_dir, cfg.title, cfg.max_samples))
    console.print(f"report → {output}")
    return output
