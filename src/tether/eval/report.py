"""``tether report``: one self-contained HTML page a person reads first.

Everything comes from the files the stages wrote in the run directory — ``metrics.jsonl``,
``<stage>_heldout.json`` (held-out curve and alarm events), ``rm/eval_report.json``,
``*.stats.json`` (annotator agreement), ``eval.json`` / ``eval_samples.jsonl``,
``frontier.json``, ``summary.json`` and ``config.yaml`` — so a report can be rebuilt at any
time. The page opens with a "did it work?" verdict per RL stage, per model ``tether eval`` compared with
its reference (from the 95% intervals of eval.json) and per reward model (``tether.eval.verdict``). Charts
are inline SVG (``tether.eval.charts``: no JavaScript, no CDN, no images to fetch); every piece of text from
a model or a file is HTML-escaped.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from tether.config import ReportConfig
from tether.data import DataError
from tether.eval.charts import COLORS, esc, svg_chart, svg_scatter
from tether.eval.frontier_fit import gao_curve
from tether.eval.intervals import Interval
from tether.eval.safety import METRICS as SAFETY_METRICS
from tether.eval.safety import chart_points
from tether.eval.verdict import CHANCE, HOW_TO_TURN_ON, eval_verdicts, heldout_verdict, reward_model_problems, side_of
from tether.utils.files import atomic_write_text
from tether.utils.logging import console

# PPO's / GRPO's logged names (docs/metrics.md); a metric the stage did not log is skipped
RL_CURVES = [("reward/score_mean", "proxy reward (train batch)"), ("objective/kl", "KL to reference (nats)"),
             ("objective/kl_coef", "KL coefficient β"),
             ("objective/rlhf_reward", "RLHF reward (proxy − β·KL)"),
             ("policy/clip_frac", "clip fraction (share of tokens clipped)"),
             ("policy/approx_kl", "approx KL(π_old‖π) per update"),
             ("objective/entropy", "entropy (nats/token)"), ("response/length_mean", "response length (tokens)"),
             ("objective/cost", "cost (train batch mean, constrained PPO)"),
             ("objective/lagrange_multiplier", "Lagrange multiplier λ")]
TRAIN_CURVES = [("loss", "training loss"), ("eval/loss", "held-out loss")]
VERDICT_STYLE = {"improved": "ok", "flat": "warn", "reference_only": "warn", "alarm": "alarm"}

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.muted{color:#666}.charts{display:flex;flex-wrap:wrap;gap:1em}.chart{border:1px solid #eee;border-radius:6px}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}.alarm{background:#fdecea;border-left:4px solid #d62728;
padding:.5em 1em;margin:.5em 0}.ok{background:#eaf6ec;border-left:4px solid #2ca02c;padding:.5em 1em;margin:.5em 0}
.warn{background:#fff6e0;border-left:4px solid #e69f00;padding:.5em 1em;margin:.5em 0}
.answers td{max-width:360px;white-space:pre-wrap;font-size:.92em}pre{background:#f6f6f8;padding:1em;overflow:auto}
"""


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


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


def _curves(rows: list[dict], keys: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """One chart per metric logged at two steps or more, and a note for each metric logged only once."""
    charts, notes = [], []
    for key, title in keys:
        pts = [(float(r["step"]), float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]
        if len(pts) == 1:
            notes.append(f"{esc(title)}: one value, {fmt(pts[0][1])} at step {pts[0][0]:.0f}")
        elif pts:
            charts.append(svg_chart({key: pts}, title, "step", integer_x=True))
    return charts, notes


def _is_rl(rows: list[dict]) -> bool:
    return any("objective/kl" in r for r in rows)


def _section_verdict(run_dir: Path, stages: dict[str, list[dict]]) -> str:
    """Did it work? For each RL stage: held-out gold change and the alarm (or how to measure them); for each
    reward model: held-out accuracy against chance and the 'longer response wins' baseline."""
    boxes = []
    heldout = {}
    for path in sorted(run_dir.glob("*_heldout.json")):
        data = _read_json(path)
        if isinstance(data, dict):
            heldout[path.name[: -len("_heldout.json")]] = data
    for stage in sorted(set(heldout) | {stage for stage, rows in stages.items() if _is_rl(rows)}):
        data = heldout.get(stage, {})
        verdict = heldout_verdict(stage, data.get("points") or [], data.get("alarms") or [])
        if verdict is None:
            boxes.append(f"<div class='warn'><b>{esc(stage)}</b>: no held-out evaluation, so no verdict: "
                         f"{esc(HOW_TO_TURN_ON)}.</div>")
        else:
            boxes.append(f"<div class='{VERDICT_STYLE[verdict.status]}'><b>{esc(stage)}</b>: "
                         f"{esc(verdict.sentence())}</div>")
    for path in sorted(run_dir.glob("*/eval_report.json")):
        report = _read_json(path)
        if not isinstance(report, dict) or not isinstance(report.get("accuracy"), (int, float)):
            continue
        problems = reward_model_problems(report)
        style = "alarm" if report["accuracy"] < CHANCE else "warn" if problems else "ok"
        judged = (f"is {' and '.join(problems)}" if problems else
                  f"beats chance ({CHANCE}) and the 'longer response wins' baseline "
                  f"({fmt(report.get('length_baseline_accuracy'))})")
        boxes.append(f"<div class='{style}'><b>reward model {esc(path.parent.name)}</b>: held-out accuracy "
                     f"{fmt(report['accuracy'])} {esc(judged)}.</div>")
    for verdict in eval_verdicts(_read_json(run_dir / "eval.json")):
        boxes.append(f"<div class='{VERDICT_STYLE[verdict.status]}'><b>{esc(verdict.model)} vs "
                     f"{esc(verdict.reference)}</b> (tether eval): {esc(verdict.sentence())}</div>")
    if not boxes:
        boxes.append("<p class='muted'>No RL stage, evaluation or reward model in this run directory: nothing to judge "
                     "here.</p>")
    return "<h2 id='verdict'>Did it work?</h2>" + "".join(boxes)


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
            verdict = heldout_verdict(stage, points, alarms)
            gold = {"improved": f", and {verdict.gold_text()}", "flat": f", but {verdict.gold_text()}",
                    "reference_only": ", but only the starting policy was evaluated"}[verdict.status]
            out.append(f"<div class='{VERDICT_STYLE[verdict.status]}'><b>No reward-hacking alarm</b> (gold never fell "
                       f"while the proxy rose; length and repetition stayed in line with the reference){esc(gold)}."
                       "</div>")
        its = [float(p["iteration"]) for p in points]
        charts = [
            svg_chart({"proxy": list(zip(its, [p["proxy"] for p in points])),
                       "gold": list(zip(its, [p["gold"] for p in points]))},
                      "held-out proxy vs gold reward", "iteration", markers=True, vlines=alarm_its,
                      integer_x=True),
            svg_chart({"proxy": [(p["kl"], p["proxy"]) for p in points], "gold": [(p["kl"], p["gold"]) for p in points]},
                      "reward vs KL to the reference", "KL (nats)", markers=True),
            svg_chart({"length": list(zip(its, [p["length"] for p in points]))}, "held-out response length",
                      "iteration", markers=True, integer_x=True),
        ]
        if any(p.get("cost") is not None for p in points):  # a constrained run: its held-out cost against the bound
            costs = [(x, p["cost"]) for x, p in zip(its, points) if p.get("cost") is not None]
            limit = data.get("cost_limit")
            series = {"cost": costs} | ({"cost limit": [(its[0], limit), (its[-1], limit)]} if limit is not None
                                         else {})
            charts.append(svg_chart(series, "held-out cost (constrained run)", "iteration", markers=True,
                                    integer_x=True))
        out.append("<div class='charts'>" + "".join(charts) + "</div>")
    return ("<h2 id='alarm'>Held-out evaluation and reward-hacking alarm</h2>" + "".join(out)) if out else ""


def _section_training(stages: dict[str, list[dict]]) -> str:
    out = []
    for stage, rows in stages.items():
        is_rl = _is_rl(rows)
        charts, notes = _curves([r for r in rows if r.get("step", 0) > 0 or not is_rl],
                                RL_CURVES if is_rl else TRAIN_CURVES)
        if is_rl:
            gold_charts, gold_notes = _curves(rows, [("reward/gold_mean", "gold reward (train batch)")])
            charts, notes = charts + gold_charts, notes + gold_notes
        if charts or notes:
            note = f"<p class='muted'>{'; '.join(notes)} (no curve).</p>" if notes else ""
            out.append(f"<h3>{esc(stage)}</h3><div class='charts'>{''.join(charts)}</div>{note}")
    return ("<h2 id='training'>Training curves</h2>" + "".join(out)) if out else ""


def _run_name(run_dir: Path) -> str:
    return run_dir.resolve().name


def comparison_charts(run_dir: Path, compare: list[str]) -> dict[str, str]:
    """The training curves of ``run_dir`` and the run directories ``compare`` on shared charts: for each RL stage of
    ``run_dir`` and each RL metric (:data:`RL_CURVES`) that any of the runs logged for that stage at two steps or
    more, one chart with a line per run (named by its directory). Keyed by file name, ``<stage>-<metric>.svg``
    (``/`` in the metric's name as ``_``); the bound a constrained run was held to (``objective/cost_limit``) is
    drawn on the cost chart as a dashed line, for each run whose λ was above 0 at some iteration (a weighted-sum
    run logs a bound it was never held to, with λ at 0 throughout)."""
    runs = {_run_name(run_dir): _metrics_by_stage(run_dir)}
    for other in compare:
        path = Path(other)
        if not (path / "metrics.jsonl").is_file():
            raise DataError(f"report compare: {path} has no metrics.jsonl to compare (is it a run directory?)")
        name = _run_name(path)
        runs[name if name not in runs else str(path)] = _metrics_by_stage(path)
    charts: dict[str, str] = {}
    for stage, rows in runs[_run_name(run_dir)].items():
        if not _is_rl(rows):
            continue
        for key, title in RL_CURVES:
            series, styles = {}, {}
            for i, (name, stages) in enumerate(runs.items()):
                logged = [r for r in stages.get(stage, []) if r.get("step", 0) > 0 and isinstance(r.get(key), (int, float))]
                if len(logged) < 2:
                    continue
                series[name] = [(float(r["step"]), float(r[key])) for r in logged]
                styles[name] = {"color": COLORS[i % len(COLORS)]}
                bounds = [(float(r["step"]), float(r["objective/cost_limit"])) for r in logged
                          if isinstance(r.get("objective/cost_limit"), (int, float))]
                held = any((r.get("objective/lagrange_multiplier") or 0) > 0 for r in logged)  # (weighted: λ ≡ 0)
                if key == "objective/cost" and bounds and held:
                    series[f"{name}: bound"] = bounds
                    styles[f"{name}: bound"] = {"color": COLORS[i % len(COLORS)], "dash": "5 3", "width": 1.2}
            drawn = [name for name in runs if name in series]
            if drawn:  # (a chart of one line has no legend: its title names the run)
                label = f"{stage}: {title}" + (f" ({drawn[0]})" if len(series) == 1 else "")
                charts[f"{stage}-{key.replace('/', '_')}.svg"] = svg_chart(
                    series, label, "iteration", integer_x=True, styles=styles)
    return charts


def _section_comparison(run_dir: Path, compare: list[str], charts: dict[str, str] | None = None) -> str:
    if not compare:
        return ""
    charts = comparison_charts(run_dir, compare) if charts is None else charts
    names = ", ".join(esc(_run_name(Path(c))) for c in compare)
    body = "".join(charts.values()) or "<p class='muted'>No RL stage of this run logged curves to compare.</p>"
    return (f"<h2 id='compare'>Compared with {names}</h2><p class='muted'>Each RL curve of this run with the same "
            f"stage's curve of each run compared (one colour per run).</p><div class='charts'>{body}</div>")


def frontier_chart(data: dict, width: int = 640, height: int = 320) -> str:
    """The reward-vs-KL chart of a ``frontier.json`` (an SVG element): each method's proxy and gold points against
    KL, with the fitted Gao et al. curves through them."""
    by_method: dict[str, list[dict]] = defaultdict(list)
    for p in data["points"]:
        by_method[p.get("method", "?")].append(p)
    series, styles = {}, {}
    color = {method: COLORS[i % len(COLORS)] for i, method in enumerate(by_method)}  # one colour per method
    for method, pts in by_method.items():
        pts = sorted(pts, key=lambda p: p["kl"])
        series[f"{method} proxy"] = [(p["kl"], p["proxy"]) for p in pts if p.get("proxy") is not None]
        series[f"{method} gold"] = [(p["kl"], p["gold"]) for p in pts if p.get("gold") is not None]
        styles[f"{method} proxy"] = {"color": color[method], "dash": "5 3", "markers": True}
        styles[f"{method} gold"] = {"color": color[method], "markers": True}
    start = data.get("start") or {}
    for f in data.get("fits") or []:  # the fitted curve through the method's points: start + R(KL), from KL 0 on
        top = max((p["kl"] for p in by_method.get(f["method"], [])), default=0.0)
        if f.get("reward") in start and top > 0:
            kls = [top * i / 40 for i in range(41)]
            name = f"{f['method']} {f['reward']} fit"
            series[name] = [(k, start[f["reward"]] + gao_curve(f["form"], f["alpha"], f["beta"], k)) for k in kls]
            styles[name] = {"color": color.get(f["method"], "#888"), "width": 1.2, "opacity": 0.45,
                            "dash": "5 3" if f["reward"] == "proxy" else ""}
    return svg_chart(series, "reward vs KL (solid: gold, dashed: proxy, pale: fitted)", "KL (nats)", width, height,
                     styles=styles)


def write_frontier_svg(run_dir: Path) -> Path | None:
    """``<run_dir>/frontier.svg``: :func:`frontier_chart` as a standalone image (for docs and slides), when the
    run directory has a ``frontier.json`` with points; None otherwise."""
    data = _read_json(run_dir / "frontier.json")
    if not isinstance(data, dict) or not data.get("points"):
        return None
    return _write_svg(run_dir / "frontier.svg", frontier_chart(data))


def _write_svg(path: Path, chart: str) -> Path:
    """An inline chart written as a standalone SVG file (with the namespace a file needs)."""
    if "xmlns=" not in chart:
        chart = chart.replace("<svg ", "<svg xmlns='http://www.w3.org/2000/svg' ", 1)
    atomic_write_text(path, chart + "\n")
    return path


def frontier_seeds_chart(combined: dict, reward: str, width: int = 640, height: int = 320) -> str:
    """One reward's gain against KL over several frontier runs (:func:`tether.eval.frontier_seeds.combine`), as an
    SVG element: per method the mean over the runs (solid, with markers), each run's own points pale behind it,
    and the fit pooled over the runs (pale, dashed); every line starts at the start itself, gain 0 at KL 0."""
    field = f"{reward}_gain"
    by_method: dict[str, list[dict]] = defaultdict(list)
    for row in combined["settings"]:
        if row.get(field) is not None:
            by_method[row["method"]].append(row)
    color = {method: COLORS[i % len(COLORS)] for i, method in enumerate(by_method)}
    series, styles = {}, {}
    for name, points in combined["gains"].items():
        for method in by_method:
            mine = sorted((p for p in points if p["method"] == method and p.get(field) is not None),
                          key=lambda p: p["kl"])
            key = f"{method} {name}"
            series[key] = ([] if mine and mine[0]["kl"] == 0 else [(0.0, 0.0)]) + [(p["kl"], p[field]) for p in mine]
            styles[key] = {"color": color[method], "width": 1.0, "opacity": 0.35, "legend": False}
    for method, rows in by_method.items():
        rows = sorted(rows, key=lambda r: r["kl"]["mean"])
        series[f"{method} mean"] = [(0.0, 0.0)] + [(r["kl"]["mean"], r[field]["mean"]) for r in rows]  # from the start
        styles[f"{method} mean"] = {"color": color[method], "markers": True, "width": 2.2}
    for f in combined.get("fits") or []:
        if f.get("reward") != reward or f.get("method") not in by_method:
            continue
        top = max(r["kl"]["max"] for r in by_method[f["method"]])
        key = f"{f['method']} fit (pooled)"
        series[key] = [(top * i / 40, gao_curve(f["form"], f["alpha"], f["beta"], top * i / 40)) for i in range(41)]
        styles[key] = {"color": color[f["method"]], "width": 1.2, "opacity": 0.55, "dash": "5 3"}
    runs = len(combined.get("runs") or [])
    return svg_chart(series, f"{reward} gain over the start vs KL, {runs} runs (bold: mean; pale: each run; dashed: "
                     "pooled fit)", "KL (nats)", width, height, styles=styles)


def write_frontier_seeds_svgs(run_dir: Path, combined: dict) -> list[Path]:
    """``<run_dir>/frontier_seeds-gold.svg`` and ``-proxy.svg``: :func:`frontier_seeds_chart` as standalone images."""
    charts = {reward: frontier_seeds_chart(combined, reward) for reward in ("gold", "proxy")}
    return [_write_svg(run_dir / f"frontier_seeds-{reward}.svg", chart) for reward, chart in charts.items() if chart]


def _section_frontier(run_dir: Path) -> str:
    data = _read_json(run_dir / "frontier.json")
    if not isinstance(data, dict) or not data.get("points"):
        return ""
    fits = data.get("fits") or []
    rows = "".join(f"<tr><td>{esc(p.get('method'))}</td><td>{esc(p.get('setting'))}</td><td class='num'>{fmt(p['kl'])}"
                   f"</td><td class='num'>{fmt(p.get('proxy'))}</td><td class='num'>{fmt(p.get('gold'))}</td></tr>"
                   for p in data["points"])
    fit_rows = "".join(
        f"<tr><td>{esc(f['method'])}</td><td>{esc(f['reward'])}</td><td>{esc(f.get('formula', f['form']))}</td>"
        f"<td class='num'>{fmt(f['alpha'])}</td><td class='num'>{fmt(f['beta'])}</td>"
        f"<td class='num'>{fmt(f.get('r2'))}</td><td class='num'>"
        f"{'still rising' if f.get('peak_kl') is None else fmt(f['peak_kl'])}</td></tr>" for f in fits)
    fit_table = ("<p>Gao et al. (2022) forms fitted to the gains over the starting policy (d = √KL); the peak is the KL "
                 "where the fitted reward turns down.</p><table><tr><th>method</th><th>reward</th><th>form</th>"
                 "<th>α</th><th>β</th><th>R²</th><th>peak KL</th></tr>" + fit_rows + "</table>") if fits else ""
    return ("<h2 id='frontier'>Reward vs KL frontier</h2>" + frontier_chart(data)
            + "<table><tr><th>method</th><th>setting</th><th>KL</th><th>proxy</th><th>gold</th></tr>" + rows
            + "</table>" + fit_table)


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
    cols = [("proxy", "proxy_mean"), ("gold", "gold_mean"), ("KL", "kl_mean"), ("entropy", "entropy_mean"),
            ("win vs ref", "win_rate_vs_reference"), ("length", "length_mean"), ("EOS", "eos_rate"),
            ("distinct-1", "distinct_1"), ("distinct-2", "distinct_2"), ("self-BLEU", "self_bleu"),
            ("perplexity", "perplexity"), ("MC accuracy", "mc_accuracy")]
    head = "".join(f"<th>{esc(t)}</th>" for t, _ in cols)
    rows = "".join(f"<tr><td>{esc(name)}</td>" + "".join(f"<td class='num'>{fmt(m.get(k))}</td>" for _, k in cols)
                   + "</tr>" for name, m in data["models"].items())
    out = (f"<h2 id='eval'>Held-out evaluation</h2><p class='muted'>{fmt(data.get('prompts'))} held-out prompts; "
           f"reference {esc(data.get('reference'))}; proxy <code>{esc(data.get('reward'))}</code>, gold "
           f"<code>{esc(data.get('gold'))}</code>. KL is Σ log π − log π_ref on each policy's own samples; win-rate is "
           "judged by the low-noise held-out evaluator; perplexity and multiple-choice accuracy measure the alignment "
           f"tax.</p><table id='eval-table'><tr><th>model</th>{head}</tr>{rows}</table>")
    out += _eval_intervals(data)
    out += _eval_cost(data)
    out += _eval_safety(data)
    samples_path = run_dir / "eval_samples.jsonl"
    if samples_path.is_file():
        samples = [json.loads(line) for line in samples_path.read_text(encoding="utf-8").splitlines()[:max_samples]
                   if line.strip()]
        names = list(data["models"])
        head = "".join(f"<th>{esc(n)}</th>" for n in names)
        body = "".join("<tr><td>" + esc(s["prompt"]) + "</td>" + "".join(
            f"<td>{esc(s['responses'].get(n, ''))}{_answer_scores(s, n)}</td>" for n in names) + "</tr>"
            for s in samples)
        out += (f"<h3>The same prompts answered by each model</h3><p class='muted'>The first {len(samples)} of "
                f"{fmt(data.get('prompts'))} prompts, every model's answer (under it: its gold, proxy and cost "
                f"when measured).</p><table class='answers' id='answers'><tr><th>prompt</th>{head}</tr>{body}</table>")
    return out


def _answer_scores(sample: dict, name: str) -> str:
    """'gold 0.512 · proxy −1.2 · cost 0.3' under an answer, from the per-prompt fields of eval_samples.jsonl (if
    any)."""
    parts = [f"{label} {fmt(sample[field][name])}" for field, label in (("gold", "gold"), ("proxy", "proxy"),
                                                                         ("cost", "cost"))
             if isinstance(sample.get(field), dict) and name in sample[field]]
    return f"<br><span class='muted'>{' · '.join(parts)}</span>" if parts else ""


def _eval_intervals(data: dict) -> str:
    """Each model against the reference: gold and proxy gain and win-rate, each with its interval, the number of
    prompts, and whether the interval clears zero (½ for the win-rate). Empty for an eval.json without intervals."""
    reference = data.get("reference")
    settings = data.get("intervals") if isinstance(data.get("intervals"), dict) else {}
    level = settings.get("level", 0.95)
    rows = []
    for name, m in data["models"].items():
        if name == reference or not isinstance(m, dict):
            continue
        for key, what, against, words in (("gold_gain", "gold gain", 0.0, "0"), ("proxy_gain", "proxy gain", 0.0, "0"),
                                          ("win_rate_interval", "win-rate", 0.5, "½")):
            if not isinstance(m.get(key), dict):
                continue
            try:
                iv = Interval.from_dict(m[key])
            except (KeyError, TypeError, ValueError):
                continue
            side = side_of(iv, against, words)
            style = "ok" if side.startswith("above") else "alarm" if side.startswith("below") else "warn"
            cleared = f"yes: {side}" if iv.above(against) or iv.below(against) else f"no: {side}"
            estimate = fmt(iv.estimate) if key == "win_rate_interval" else f"{iv.estimate:+.3f}"
            rows.append(f"<tr><td>{esc(name)}</td><td>{esc(what)}</td><td class='num'>{esc(estimate)}</td><td class='num'>"
                        f"[{fmt(iv.low)}, {fmt(iv.high)}]</td><td class='num'>{iv.n}</td><td class='{style}'>"
                        f"{esc(cleared)}</td></tr>")
    if not rows:
        return ""
    percent = f"{float(level) * 100:g}%" if isinstance(level, (int, float)) else "95%"
    return (f"<h3>Each model against the reference ({esc(reference)})</h3><p class='muted'>Gains are the model's mean "
            f"minus the reference's on the same prompts; {esc(percent)} intervals from a "
            f"{esc(settings.get('method', 'paired bootstrap over prompts'))} ({fmt(settings.get('resamples'))} "
            "resamples). An interval that includes 0 (½ for the win-rate) does not tell the two apart: more prompts "
            "narrow it (docs/evaluation.md).</p><table id='eval-intervals'><tr><th>model</th><th>vs reference</th>"
            f"<th>estimate</th><th>{esc(percent)} interval</th><th>prompts</th><th>clears 0 (½ for win-rate)?</th>"
            f"</tr>{''.join(rows)}</table>")


SAFETY_LABELS = {"harm": "harm rate", "over_refusal": "over-refusal rate", "helpfulness": "helpfulness"}


def safety_chart(models: dict[str, dict[str, Any]]) -> str:
    """The helpful / harmless trade-off as an SVG element: one point per model with a harm rate and a helpfulness,
    helpfulness (y) against harm rate (x), whiskers for their intervals; empty when no model has both."""
    return svg_scatter(chart_points(models), "helpfulness vs harm rate (whiskers: intervals)",
                       "harm rate (harmful prompts)", "helpfulness")


def _interval_cells(value: Any, signed: bool = False) -> str:
    """Estimate, interval and prompts of an Interval dict as three cells ('–' when absent or unreadable)."""
    try:
        iv = Interval.from_dict(value)
    except (KeyError, TypeError, ValueError):
        return "<td class='num'>–</td>" * 3
    estimate = f"{iv.estimate:+.3f}" if signed else fmt(iv.estimate)
    return (f"<td class='num'>{esc(estimate)}</td><td class='num'>[{fmt(iv.low)}, {fmt(iv.high)}]</td>"
            f"<td class='num'>{iv.n}</td>")


COST_SIDES = {"below": ("ok", "below the bound: the constraint holds on these prompts"),
              "above": ("alarm", "above the bound: violated"),
              "spans": ("warn", "spans the bound: these prompts cannot tell")}


def _eval_cost(data: dict) -> str:
    """The cost side of a constrained run (eval.json with ``cost``): each model's mean cost (interval, prompts), its
    change against the reference (paired interval) and where the interval lies against the bound. Empty without
    a cost."""
    models = {name: m for name, m in data["models"].items() if isinstance(m, dict) and m.get("cost_mean") is not None}
    if not models:
        return ""
    reference, bound = data.get("reference"), data.get("cost_limit")
    settings = data.get("intervals") if isinstance(data.get("intervals"), dict) else {}
    level = settings.get("level", 0.95)
    percent = f"{float(level) * 100:g}%" if isinstance(level, (int, float)) else "95%"
    rows = []
    for name, m in models.items():
        against = ("<td class='num'>–</td>" * 3 if name == reference or not isinstance(m.get("cost_change"), dict)
                   else _interval_cells(m["cost_change"], signed=True))
        style, words = COST_SIDES.get(m.get("cost_vs_limit"), ("muted", "–"))
        rows.append(f"<tr><td>{esc(name)}</td>{_interval_cells(m.get('cost_interval'))}{against}"
                    f"<td class='{style}'>{esc(words)}</td></tr>")
    head = (f"<tr><th>model</th><th>mean cost</th><th>{esc(percent)} interval</th><th>prompts</th>"
            f"<th>change vs reference</th><th>{esc(percent)} interval</th><th>prompts</th><th>against the bound</th>"
            "</tr>")
    bound_text = (f"the bound d = {fmt(bound)} of the constraint E[cost] ≤ d; a model meets it on these prompts when "
                  "its whole interval lies below d" if isinstance(bound, (int, float)) else "no bound given (cost_limit)")
    return (f"<h3 id='cost'>Cost (the constraint)</h3><p class='muted'>cost <code>{esc(data.get('cost'))}</code> on "
            f"each answer; {esc(bound_text)}. {esc(percent)} intervals from a bootstrap over the prompts, changes "
            f"against the reference ({esc(reference)}) from a paired one (docs/evaluation.md).</p>"
            f"<table id='eval-cost'>{head}{''.join(rows)}</table>")


def _eval_safety(data: dict) -> str:
    """The helpful / harmless trade-off of an eval.json with safety metrics: a table of each model's harm rate,
    over-refusal rate and helpfulness (interval, prompts) and change against the reference (paired interval), and
    the helpfulness-vs-harm chart. Empty without safety metrics."""
    models = {name: m for name, m in data["models"].items() if isinstance(m, dict)}
    if not any(m.get(mean) is not None for m in models.values() for mean, _, _ in SAFETY_METRICS.values()):
        return ""
    reference = data.get("reference")
    settings = data.get("intervals") if isinstance(data.get("intervals"), dict) else {}
    level = settings.get("level", 0.95)
    percent = f"{float(level) * 100:g}%" if isinstance(level, (int, float)) else "95%"
    rows = []
    for name, m in models.items():
        for field, (_, spread, change) in SAFETY_METRICS.items():
            if not isinstance(m.get(spread), dict):
                continue
            against = ("<td class='num'>–</td>" * 3 if name == reference or not isinstance(m.get(change), dict)
                       else _interval_cells(m[change], signed=True))
            rows.append(f"<tr><td>{esc(name)}</td><td>{esc(SAFETY_LABELS[field])}</td>{_interval_cells(m[spread])}"
                        f"{against}</tr>")
    head = (f"<tr><th>model</th><th>metric</th><th>mean</th><th>{esc(percent)} interval</th><th>prompts</th>"
            f"<th>change vs reference</th><th>{esc(percent)} interval</th><th>prompts</th></tr>")
    return (f"<h3 id='safety'>Helpful / harmless trade-off</h3><p class='muted'>safety <code>{esc(data.get('safety'))}"
            "</code>: harm rate = mean harm over the prompts where harm applies (the harmful ones), over-refusal rate "
            "= share of the prompts where it applies (the benign ones) that were refused, helpfulness = mean "
            f"helpfulness; {esc(percent)} intervals from a bootstrap over those prompts, changes against the "
            f"reference ({esc(reference)}) from a paired bootstrap over the prompts both apply to "
            "(docs/evaluation.md). Lower left is safe but unhelpful, upper left is the goal.</p>"
            f"<table id='eval-safety'>{head}{''.join(rows)}</table>{safety_chart(models)}")


def build_report(run_dir: Path, title: str = "", max_samples: int = 12, compare: list[str] | None = None,
                 compare_charts: dict[str, str] | None = None) -> str:
    """The report's HTML for ``run_dir`` (with ``compare``: its RL curves beside those run directories';
    ``compare_charts``: those charts, when the caller has already drawn them with :func:`comparison_charts`)."""
    stages = _metrics_by_stage(run_dir)
    sections = [_section_verdict(run_dir, stages), _section_summary(run_dir), _section_heldout(run_dir),
                _section_eval(run_dir, max_samples), _section_frontier(run_dir), _section_training(stages),
                _section_comparison(run_dir, list(compare or []), compare_charts), _section_reward_model(run_dir),
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
        raise DataError(f"run directory {run_dir} does not exist")
    output = Path(cfg.output) if cfg.output else run_dir / "report.html"
    charts = comparison_charts(run_dir, cfg.compare) if cfg.compare else None  # drawn once: the page and the files
    atomic_write_text(output, build_report(run_dir, cfg.title, cfg.max_samples, cfg.compare, charts))
    console.print(f"report → {output}")
    if charts is not None:
        for name, chart in charts.items():
            _write_svg(run_dir / "compare" / name, chart)
        console.print(f"{len(charts)} comparison charts → {run_dir / 'compare'}")
    chart = write_frontier_svg(run_dir)
    if chart is not None:
        console.print(f"frontier chart → {chart}")
    return output
