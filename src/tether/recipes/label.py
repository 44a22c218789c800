"""Preference collection: sample K responses, label them, check the labels, export preferences.

``tether sample`` → ``samples.jsonl`` → ``tether label simulate`` (or people, or a judge)
→ ``labels.sqlite`` → ``tether label stats`` / ``tether label export`` → ``preferences.jsonl``
(TRL format, ready for ``tether rm`` and ``tether dpo``).
"""

from __future__ import annotations

import json
import os
import random
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
from tether.data import DataError
from tether.data.io import read_text
from tether.engine.runtime import atomic_write_text, limit, load_generation_prompts, seed_everything
from tether.feedback.samples import Samples, load_samples, pair_items, ranking_items
from tether.feedback.simulate import AnnotatorSpec, Comparison, default_panel, simulate_labels, simulate_rankings
from tether.feedback.stats import json_safe, label_stats, preference_rows
from tether.feedback.store import Added, Item, LabelStore, StoredLabel
from tether.models.loading import load_causal_lm, load_tokenizer
from tether.rollout.sampling import generation_of
from tether.utils.imports import import_object
from tether.utils.logging import console


def _import(spec: str):
    try:
        return import_object(spec)
    except ImportError as exc:
        raise DataError(f"cannot import '{spec}': {exc}") from None


def run_sample(cfg: SampleConfig) -> Path:
    """K responses per prompt → samples.jsonl rows {prompt, responses, generation, model}."""
    from tether.rollout.best_of_n import sample_and_score

    seed_everything(cfg.seed)
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model)
    prompts = load_generation_prompts(cfg, tokenizer, cfg.max_prompts)
    policy = load_causal_lm(cfg.model, seed=cfg.seed, pad_token_id=tokenizer.pad_token_id)

    generation = generation_of(cfg)
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
    """Pairs of distinct responses from each samples.jsonl row (validated; the order within a pair is randomised).

    Item ids are content hashes of the prompt and the pair, stable and unique across files.
    """
    return [Comparison(p.item_id, p.prompt, p.response_a, p.response_b)
            for p in pair_items(load_samples(path), pairs_per_prompt, seed)]


def ranking_items_from_samples(path: str) -> list[tuple[str, str, list[str]]]:
    """(item id, prompt, distinct responses) per samples.jsonl row (validated), for K-way ranking."""
    return ranking_items(load_samples(path))


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
        stored = store.add_items(items, match_content=True)  # a stored item keeps its id and response order
        added = store.add_labels([stored.remap(StoredLabel(name, item_id, ranking[0],
                                                           shown_order=list(range(len(ranking))), seconds=seconds,
                                                           ranking=ranking))
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
    panel: list[AnnotatorSpec] = default_panel(cfg.panel_size, cfg.planted_length_bias, cfg.noise_scale)
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
        stored = store.add_items(items, match_content=True)
        added = store.add_labels([stored.remap(StoredLabel(lab.annotator, lab.item, lab.choice, shown_order=[0, 1],
                                                           seconds=lab.seconds)) for lab in labels])
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
    atomic_write_text(output, json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
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
    include_both_bad = cfg.include_both_bad
    rows, left_out = preference_rows(items, labels, cfg.method, cfg.min_agreement, cfg.include_gold, include_both_bad)
    atomic_write_text(Path(cfg.output), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    kind = "rankings" if rows and "ranks" in rows[0] else "preference pairs"
    console.print(f"exported {len(rows)} {kind} → {cfg.output} ({left_out['ties']} tied, {left_out['both_bad']} marked "
                  f"both bad, {left_out['low_agreement']} below min_agreement={cfg.min_agreement}, "
                  f"{left_out['gold_skipped']} gold questions left out)")
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
        constitution = tuple(line.strip() for line in read_text(path).splitlines() if line.strip())
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
        stored = store.add_items([Item(c.item, c.prompt, [c.response_a, c.response_b], source=name)
                                  for c in comparisons], match_content=True)
        store.add_labels([stored.remap(StoredLabel(name, c.item, v.choice, tie=v.choice is None,
                                                   confidence=round(v.confidence, 4), rationale=v.principle,
                                                   shown_order=[0, 1])) for c, v in zip(comparisons, verdicts)])
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


def _tokens_path(db: str, tokens_file: str = "") -> Path:
    return Path(tokens_file) if tokens_file else Path(db).with_suffix(".tokens.json")


def _save_tokens(path: Path, admin: str | None, annotators: dict[str, str]) -> None:
    """Add tokens to the tokens file (mode 600), keeping every token already in it."""
    saved: dict = {"admin": None, "annotators": {}}
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: cannot read the tokens file ({exc}); move it away (its tokens stay valid "
                            "in the store) and run again") from None
        if not isinstance(saved, dict) or not isinstance(saved.get("annotators", {}), dict):
            raise DataError(f"{path}: not a tokens file (expected {{'admin': ..., 'annotators': {{...}}}})")
    saved = {"admin": admin or saved.get("admin"), "annotators": {**saved.get("annotators", {}), **annotators}}
    atomic_write_text(path, json.dumps(saved, indent=2) + "\n", mode=0o600)  # secrets: private from the start


def _load_serve_samples(store: LabelStore, cfg: LabelServeConfig) -> None:
    """Add the items of ``cfg.samples`` and say exactly what was new and what the store already had."""
    samples: Samples = load_samples(cfg.samples)
    if cfg.mode == "ranking":
        items = [Item(item_id, prompt, responses, source="labeling-app")
                 for item_id, prompt, responses in ranking_items(samples)]
        kind = "sets of responses to rank"
    else:
        items = [Item(p.item_id, p.prompt, [p.response_a, p.response_b], source="labeling-app")
                 for p in pair_items(samples, cfg.pairs_per_prompt, cfg.seed)]
        kind = "comparisons"
    added: Added = store.add_items(items, match_content=True)
    skipped = (f"; {len(samples.nothing_to_compare)} row(s) with fewer than two different responses left out "
               f"(rows {', '.join(map(str, samples.nothing_to_compare[:10]))})" if samples.nothing_to_compare else "")
    console.print(f"loaded {len(added.new)} new {kind} from {cfg.samples} ({len(added.existing)} already in the store)"
                  f"{skipped}; the store has {len(store.items())} items")


def read_guidelines(path: str) -> str:
    """The campaign's guidelines for `label serve guidelines=...` (empty = the built-in ones).

    A markdown file (``.md``), or a constitution (``.txt``, one principle per line, as for
    `label judge constitution=...`), shown with what each button means.
    """
    if not path:
        return ""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"guidelines file {file} does not exist (a markdown file of instructions for annotators, "
                        "or a .txt constitution with one principle per line)")
    text = read_text(file)  # UTF-8 with or without a byte-order mark, or UTF-16 with one
    if not text.strip():
        raise DataError(f"{file}: the guidelines file is empty")
    if file.suffix.lower() == ".txt":
        from tether.feedback.server import guidelines_from_principles

        return guidelines_from_principles([line.strip() for line in text.splitlines() if line.strip()])
    return text


def prepare_server(cfg: LabelServeConfig) -> tuple[str | None, dict[str, str]]:
    """Load samples and create annotators; returns (the admin token if it is new, {new annotator: token}).

    A restart keeps every token: existing annotators keep theirs, and the admin token is kept in
    the store (as a sha256) unless ``admin_token=`` sets one. New tokens are added to the tokens
    file, never replacing the ones already in it. Rotating a token is explicit: :func:`rotate_tokens`.
    """
    import secrets

    store = LabelStore(cfg.db)
    try:
        if cfg.samples:
            _load_serve_samples(store, cfg)
        existing = set(store.annotator_names())
        new_tokens = {name: secrets.token_urlsafe(24) for name in dict.fromkeys(map(str, cfg.annotators))
                      if name not in existing}
        new_admin = None if cfg.admin_token or store.has_admin_token() else secrets.token_urlsafe(24)
        path = _tokens_path(cfg.db, cfg.tokens_file)
        if new_tokens or new_admin:
            _save_tokens(path, new_admin, new_tokens)  # first on disk, then valid: a token is never lost
        for name, token in new_tokens.items():
            store.set_annotator(name, token)
        if cfg.admin_token or new_admin:
            store.set_admin_token(cfg.admin_token or new_admin)
    finally:
        store.close()
    if new_tokens or new_admin:
        shown = ([f"admin={new_admin}"] if new_admin else []) + [f"{n}={t}" for n, t in new_tokens.items()]
        console.print(f"new tokens (shown once, also in {path}): " + " ".join(shown))
    kept = sorted(existing) + ([] if new_admin or cfg.admin_token else ["admin"])
    if kept:
        console.print(f"kept the tokens of {', '.join(kept)} (see {path}); "
                      "replace one with `tether label tokens rotate=\\[name]`")
    return new_admin, new_tokens


def rotate_tokens(db: str, names: list[str], tokens_file: str = "") -> dict[str, str]:
    """New tokens for the named annotators (``admin`` = the admin token); their old tokens and sessions stop working.

    The new tokens are written to the tokens file (mode 600, other entries kept) and returned.
    """
    import secrets

    store = _open_existing(db)
    try:
        known = set(store.annotator_names())
        unknown = [n for n in names if n != "admin" and n not in known]
        if unknown:
            raise DataError(f"rotate: no annotator named {', '.join(unknown)} in {db} "
                            f"(annotators: {', '.join(sorted(known)) or 'none'})")
        fresh = {name: secrets.token_urlsafe(24) for name in dict.fromkeys(names)}
        admin = fresh.pop("admin", None)
        path = _tokens_path(db, tokens_file)
        _save_tokens(path, admin, fresh)
        for name, token in fresh.items():
            store.set_annotator(name, token)
        if admin:
            store.set_admin_token(admin)
    finally:
        store.close()
    rotated = ({"admin": admin} if admin else {}) | fresh
    console.print(f"new tokens (shown once, also in {path}): " + " ".join(f"{n}={t}" for n, t in rotated.items()))
    return rotated


def run_label_tokens(cfg: Any) -> dict[str, str]:
    """`tether label tokens db=... rotate=[alice,admin]`: rotate tokens explicitly (fields db, rotate, tokens_file)."""
    if not cfg.rotate:
        raise DataError("rotate= names the annotators (or 'admin') whose tokens to replace, e.g. rotate=[alice]")
    return rotate_tokens(cfg.db, [str(n) for n in cfg.rotate], cfg.tokens_file)


def run_label_serve(cfg: LabelServeConfig) -> None:
    try:
        import uvicorn

        from tether.feedback.server import create_app
    except ImportError:
        raise DataError("the labeling app needs the serve extra: pip install 'tether-rlhf[serve]'") from None
    guidelines = read_guidelines(cfg.guidelines)
    prepare_server(cfg)
    app = create_app(cfg.db, None, cfg.rate_limit, guidelines=guidelines)
    console.print(f"labeling app on http://{cfg.host}:{cfg.port}/  (admin: http://{cfg.host}:{cfg.port}/admin)")
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")


def run_label_import(cfg: LabelImportConfig) -> dict[str, int]:
    from tether.feedback.labelstudio import from_labelstudio

    path = Path(cfg.input)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        tasks = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not a JSON file ({exc})") from None
    items, labels = from_labelstudio(tasks, str(path))
    store = LabelStore(cfg.db)
    try:
        added = store.add_items(items, match_content=True)
        new_labels = store.add_labels([added.remap(label) for label in labels])  # stored ids and response order
    finally:
        store.close()
    console.print(f"imported {len(added.new)} new items ({len(added.existing)} already in the store) and "
                  f"{new_labels} labels from {path} → {cfg.db}")
    return {"items": len(added.new), "labels": new_labels}
