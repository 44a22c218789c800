"""Preference collection: sample K responses, label them, check the labels, export preferences.

``tether sample`` → ``samples.jsonl`` → ``tether label simulate`` (or people, or a judge)
→ ``labels.sqlite`` → ``tether label stats`` / ``tether label export`` → ``preferences.jsonl``
(TRL format, ready for ``tether rm`` and ``tether dpo``).
"""

from __future__ import annotations

import importlib
import json
import os
import random
import sys
from itertools import combinations
from pathlib import Path
from typing import Any

from rich.table import Table

from tether.config import (
    LabelExportConfig,
    LabelImportConfig,
    LabelJudgeConfig,
    LabelServeConfig,
    LabelSimulateConfig,
    LabelStatsConfig,
    ModelConfig,
    SampleConfig,
)
from tether.data import DataError, load_records
from tether.feedback.simulate import AnnotatorSpec, Comparison, default_panel, simulate_labels, simulate_rankings
from tether.feedback.stats import label_stats, preference_rows
from tether.feedback.store import Item, LabelStore, StoredLabel
from tether.models.loading import load_causal_lm, load_tokenizer
from tether.recipes.common import atomic_write_text, limit, load_generation_prompts, seed_everything
from tether.rollout.generation import GenerationConfig
from tether.utils.logging import console


def _import(spec: str):
    module_name, _, name = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise DataError(f"cannot import '{spec}': {exc}") from None


def run_sample(cfg: SampleConfig) -> Path:
    """K responses per prompt → samples.jsonl rows {prompt, responses, generation, model}."""
    from tether.rollout.best_of_n import sample_and_score

    seed_everything(cfg.seed)
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model)
    prompts = load_generation_prompts(cfg, tokenizer, cfg.max_prompts)
    policy = load_causal_lm(cfg.model, seed=cfg.seed, pad_token_id=tokenizer.pad_token_id)

    generation = GenerationConfig(cfg.max_new_tokens, cfg.temperature, cfg.top_p)
    sampled = sample_and_score(policy, tokenizer, None, prompts, cfg.k, generation, cfg.batch_size,
                               desc=f"sampling {cfg.k} per prompt")
    params = {"k": cfg.k, "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p,
              "seed": cfg.seed}
    rows = [{"prompt": s.prompt.prompt_text, "responses": s.responses, "generation": params,
             "model": cfg.model.name_or_path} for s in sampled]
    output = Path(cfg.output)
    atomic_write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    console.print(f"sampled {cfg.k} responses for each of {len(rows)} prompts → {output}")
    return output


def comparisons_from_samples(path: str, pairs_per_prompt: int, seed: int) -> list[Comparison]:
    """Pairs of distinct responses from each samples.jsonl row (the order within a pair is randomised)."""
    rng = random.Random(seed)
    out = []
    for number, row in enumerate(load_records(path), start=1):
        responses = row.get("responses")
        if not isinstance(responses, list) or len(responses) < 2 or "prompt" not in row:
            raise DataError(f"{path} row {number}: expected 'prompt' and a 'responses' list of at least 2")
        pairs = [(i, j) for i, j in combinations(range(len(responses)), 2) if responses[i] != responses[j]]
        for n, (i, j) in enumerate(pairs[:pairs_per_prompt]):
            a, b = (i, j) if rng.random() < 0.5 else (j, i)
            out.append(Comparison(f"r{number}-{n}", row["prompt"], responses[a], responses[b]))
    if not out:
        raise DataError(f"{path}: no row has two different responses to compare")
    return out


def ranking_items_from_samples(path: str) -> list[tuple[str, str, list[str]]]:
    """(item id, prompt, distinct responses) per samples.jsonl row, for K-way ranking."""
    out = []
    for number, row in enumerate(load_records(path), start=1):
        responses = row.get("responses")
        if not isinstance(responses, list) or "prompt" not in row:
            raise DataError(f"{path} row {number}: expected 'prompt' and a 'responses' list")
        distinct = list(dict.fromkeys(r for r in responses if isinstance(r, str)))
        if len(distinct) >= 2:
            out.append((f"r{number}", row["prompt"], distinct))
    if not out:
        raise DataError(f"{path}: no row has two different responses to rank")
    return out


def _simulate_rankings(cfg: LabelSimulateConfig, utility, panel: list[AnnotatorSpec]) -> dict[str, Any]:
    rng = random.Random(cfg.seed)
    ranked = ranking_items_from_samples(cfg.samples)
    items = []
    for item_id, prompt, responses in ranked:
        utilities = [utility(prompt, r) for r in responses]
        best = max(utilities)
        unique_best = utilities.count(best) == 1
        is_gold = rng.random() < cfg.gold_fraction and unique_best
        items.append(Item(item_id, prompt, responses, is_gold, utilities.index(best) if is_gold else None,
                          source="simulated-panel"))
    labels = simulate_rankings(ranked, panel, cfg.labels_per_item, utility, seed=cfg.seed)
    store = LabelStore(cfg.db)
    try:
        store.add_items(items)
        added = store.add_labels([StoredLabel(name, item_id, ranking[0], shown_order=list(range(len(ranking))),
                                              seconds=seconds, ranking=ranking)
                                  for name, item_id, ranking, seconds in labels])
    finally:
        store.close()
    console.print(f"{len(panel)} simulated annotators ranked {len(items)} sets of responses "
                  f"({sum(i.is_gold for i in items)} gold questions): {added} rankings → {cfg.db}")
    return {"comparisons": len(items), "labels": added}


def run_label_simulate(cfg: LabelSimulateConfig) -> dict[str, Any]:
    if not cfg.samples:
        raise DataError("samples= is required: a samples.jsonl from `tether sample`")
    utility = _import(cfg.utility)
    panel: list[AnnotatorSpec] = default_panel(cfg.panel_size, cfg.planted_length_bias)
    for spec in panel[len(panel) - cfg.adversarial:]:
        spec.adversarial = True
    if cfg.mode == "ranking":
        return _simulate_rankings(cfg, utility, panel)
    comparisons = comparisons_from_samples(cfg.samples, cfg.pairs_per_prompt, cfg.seed)
    rng = random.Random(cfg.seed)
    items = []
    for comp in comparisons:
        comp.is_gold = rng.random() < cfg.gold_fraction
        gold = None
        if comp.is_gold:
            u_a, u_b = utility(comp.prompt, comp.response_a), utility(comp.prompt, comp.response_b)
            gold = None if u_a == u_b else (0 if u_a > u_b else 1)
        items.append(Item(comp.item, comp.prompt, [comp.response_a, comp.response_b], comp.is_gold and gold is not None,
                          gold, source="simulated-panel"))
    labels = simulate_labels(comparisons, panel, cfg.labels_per_item, utility, seed=cfg.seed)
    store = LabelStore(cfg.db)
    try:
        store.add_items(items)
        added = store.add_labels([StoredLabel(lab.annotator, lab.item, lab.choice, shown_order=[0, 1],
                                              seconds=lab.seconds) for lab in labels])
    finally:
        store.close()
    console.print(f"{len(panel)} simulated annotators labelled {len(comparisons)} comparisons "
                  f"({sum(i.is_gold for i in items)} gold questions): {added} labels → {cfg.db}")
    return {"comparisons": len(comparisons), "labels": added}


def _open_existing(db: str) -> LabelStore:
    if not Path(db).is_file():
        raise DataError(f"label store {db} does not exist")
    return LabelStore(db)


def run_label_stats(cfg: LabelStatsConfig) -> dict[str, Any]:
    store = _open_existing(cfg.db)
    try:
        report = label_stats(store.items(), store.labels())
    finally:
        store.close()
    table = Table(title=f"annotators ({report['labels']} labels on {report['items']} items)")
    for col in ("annotator", "labels", "gold acc", "estimated acc", "mean s"):
        table.add_column(col, justify="right")
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    for name, a in report["annotators"].items():
        table.add_row(name, str(a["labels"]), fmt(a["gold_accuracy"]), fmt(a["estimated_accuracy"]),
                      fmt(a["mean_seconds"]))
    console.print(table)
    console.print(f"pairwise agreement {fmt(report['pairwise_agreement'])}, Fleiss' κ {fmt(report['fleiss_kappa'])}, "
                  f"Krippendorff's α {fmt(report['krippendorff_alpha'])}")
    if "majority_gold_accuracy" in report:
        console.print(f"on gold questions: majority vote {fmt(report['majority_gold_accuracy'])}, "
                      f"Dawid–Skene {fmt(report['dawid_skene_gold_accuracy'])}")
    output = Path(cfg.output) if cfg.output else Path(cfg.db).with_suffix(".stats.json")
    atomic_write_text(output, json.dumps(report, indent=2) + "\n")
    return report


def run_label_export(cfg: LabelExportConfig) -> dict[str, Any]:
    store = _open_existing(cfg.db)
    try:
        items, labels = store.items(), store.labels()
    finally:
        store.close()
    if cfg.format == "labelstudio":
        from tether.feedback.labelstudio import to_labelstudio

        tasks = to_labelstudio(items, labels)
        atomic_write_text(Path(cfg.output), json.dumps(tasks, ensure_ascii=False, indent=1) + "\n")
        console.print(f"exported {len(tasks)} Label Studio tasks with {sum(len(t['annotations']) for t in tasks)} "
                      f"annotations → {cfg.output}")
        return {"exported": len(tasks)}
    rows, left_out = preference_rows(items, labels, cfg.method, cfg.min_agreement, cfg.include_gold)
    atomic_write_text(Path(cfg.output), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    kind = "rankings" if rows and "ranks" in rows[0] else "preference pairs"
    console.print(f"exported {len(rows)} {kind} → {cfg.output} ({left_out['ties']} tied, {left_out['low_agreement']} "
                  f"below min_agreement={cfg.min_agreement}, {left_out['gold_skipped']} gold questions left out)")
    return {"exported": len(rows), **left_out}


def run_label_judge(cfg: LabelJudgeConfig) -> dict[str, Any]:
    """Judge comparisons in both orders; store the labels; report position bias and agreement with the gold utility."""
    from tether.feedback.judge import DEFAULT_CONSTITUTION, EndpointJudge, LocalJudge, judge_pairs, position_bias_rate

    if not cfg.samples:
        raise DataError("samples= is required: a samples.jsonl from `tether sample`")
    comparisons = comparisons_from_samples(cfg.samples, cfg.pairs_per_prompt, cfg.seed)
    comparisons = limit(comparisons, cfg.max_comparisons, "comparisons")
    constitution = DEFAULT_CONSTITUTION
    if cfg.constitution:
        path = Path(cfg.constitution)
        if not path.is_file():
            raise DataError(f"constitution file {path} does not exist")
        constitution = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        if not constitution:
            raise DataError(f"{path}: no principles (one per line)")
    if cfg.base_url:
        judge = EndpointJudge(cfg.base_url, cfg.api_model, os.environ.get(cfg.api_key_env, ""))
        name = f"judge:{cfg.api_model or cfg.base_url}"
    else:
        tokenizer = load_tokenizer(cfg.judge)
        judge = LocalJudge(load_causal_lm(ModelConfig(name_or_path=cfg.judge)), tokenizer)
        name = f"judge:{Path(cfg.judge).name or cfg.judge}"
    verdicts = judge_pairs(judge, [(c.prompt, c.response_a, c.response_b) for c in comparisons], constitution,
                           cfg.seed)
    store = LabelStore(cfg.db)
    try:
        store.add_items([Item(c.item, c.prompt, [c.response_a, c.response_b], source=name) for c in comparisons])
        store.add_labels([StoredLabel(name, c.item, v.choice, tie=v.choice is None, confidence=round(v.confidence, 4),
                                      rationale=v.principle, shown_order=[0, 1]) for c, v in zip(comparisons, verdicts)])
    finally:
        store.close()
    summary: dict[str, Any] = {"judge": name, "comparisons": len(verdicts),
                               "position_bias_rate": position_bias_rate(verdicts)}
    if cfg.utility:
        utility = _import(cfg.utility)
        gold = [None if (ua := utility(c.prompt, c.response_a)) == (ub := utility(c.prompt, c.response_b))
                else (0 if ua > ub else 1) for c in comparisons]
        decided = [(v.choice, g) for v, g in zip(verdicts, gold) if v.choice is not None and g is not None]
        first_order = [(v.first_order, g) for v, g in zip(verdicts, gold) if g is not None]
        summary["gold_agreement"] = sum(a == g for a, g in decided) / len(decided) if decided else None
        summary["gold_agreement_single_order"] = (sum(a == g for a, g in first_order) / len(first_order)
                                                  if first_order else None)
    atomic_write_text(Path(cfg.db).with_suffix(".judge.json"), json.dumps(summary, indent=2) + "\n")
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    console.print(f"{name} judged {len(verdicts)} comparisons in both orders: position bias "
                  f"{fmt(summary['position_bias_rate'])} (verdict flipped with the order → recorded as a tie); "
                  f"agreement with the gold utility {fmt(summary.get('gold_agreement'))} on consistent verdicts → {cfg.db}")
    return summary


def prepare_server(cfg: LabelServeConfig) -> tuple[str, dict[str, str]]:
    """Load samples and create annotators; returns (admin token, {new annotator: token})."""
    import secrets

    store = LabelStore(cfg.db)
    try:
        if cfg.samples and cfg.mode == "ranking":
            added = store.add_items([Item(f"k{item_id}", prompt, responses, source="labeling-app")
                                     for item_id, prompt, responses in ranking_items_from_samples(cfg.samples)])
            console.print(f"loaded {added} new sets of responses to rank from {cfg.samples}")
        elif cfg.samples:
            comparisons = comparisons_from_samples(cfg.samples, cfg.pairs_per_prompt, cfg.seed)
            added = store.add_items([Item(c.item, c.prompt, [c.response_a, c.response_b], source="labeling-app")
                                     for c in comparisons])
            console.print(f"loaded {added} new comparisons from {cfg.samples}")
        existing = {row[0] for row in store.db.execute("SELECT name FROM annotators")}
        new_tokens = {}
        for name in cfg.annotators:
            if name not in existing:
                new_tokens[name] = secrets.token_urlsafe(24)
                store.set_annotator(name, new_tokens[name])
    finally:
        store.close()
    admin = cfg.admin_token or secrets.token_urlsafe(24)
    if new_tokens or not cfg.admin_token:
        path = Path(cfg.tokens_file) if cfg.tokens_file else Path(cfg.db).with_suffix(".tokens.json")
        atomic_write_text(path, json.dumps({"admin": admin, "annotators": new_tokens}, indent=2) + "\n")
        path.chmod(0o600)
        console.print(f"tokens (shown once, also in {path}): admin={admin} "
                      + " ".join(f"{n}={t}" for n, t in new_tokens.items()))
    return admin, new_tokens


def run_label_serve(cfg: LabelServeConfig) -> None:
    try:
        import uvicorn

        from tether.feedback.server import create_app
    except ImportError:
        raise DataError("the labeling app needs the serve extra: pip install 'tether-rlhf[serve]'") from None
    admin, _ = prepare_server(cfg)
    app = create_app(cfg.db, admin, cfg.rate_limit)
    console.print(f"labeling app on http://{cfg.host}:{cfg.port}/  (admin: http://{cfg.host}:{cfg.port}/admin)")
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")


def run_label_import(cfg: LabelImportConfig) -> dict[str, int]:
    from tether.feedback.labelstudio import from_labelstudio

    path = Path(cfg.input)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a JSON file ({exc})") from None
    items, labels = from_labelstudio(tasks, str(path))
    store = LabelStore(cfg.db)
    try:
        new_items = store.add_items(items)
        new_labels = store.add_labels(labels)
    finally:
        store.close()
    console.print(f"imported {new_items} new items and {new_labels} labels from {path} → {cfg.db}")
    return {"items": new_items, "labels": new_labels}
