"""Constitutional AI's supervised phase, SL-CAI (`tether cai revise`; Bai et al. 2022, "Constitutional AI:
Harmlessness from AI Feedback"): respond to each prompt, then critique and revise the response against principles
of a constitution, and write ``revisions.jsonl``: one row per prompt, which ``tether sft`` reads as it stands.

1. the constitution, the prompts (each distinct prompt once) and the rows ``revisions.jsonl`` already holds
   (a crash's partial last line is dropped);
2. the model: a local causal LM through its chat template, or an OpenAI-compatible endpoint;
3. per batch of ``batch_size`` prompts: response → (critique → revision) × rounds, each step one generate call for
   the batch (each prompt from its own seeds), the batch's rows appended and fsynced as soon as they are complete.

The model-independent parts (constitution, messages, cleaning, seeds, row format, endpoint client) are in
:mod:`tether.feedback.revise`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tether.config import CAIReviseConfig, ModelConfig
from tether.data import DataError
from tether.data.collate import left_pad
from tether.feedback.revise import (
    DEFAULT_CONSTITUTION,
    EndpointChat,
    Principle,
    RevisionError,
    append_row,
    distinct_prompts,
    load_prompts,
    prompt_key,
    read_constitution,
    read_finished,
    revise_batch,
    revision_row,
)
from tether.models.loading import ModelLoadError, load_causal_lm, load_tokenizer
from tether.models.special_tokens import stop_token_ids
from tether.rollout.generation import GenerationConfig, generate
from tether.utils.logging import console


class LocalChat:
    """A local causal LM answering chat messages: the messages rendered with the tokenizer's chat template (with the
    generation prompt), one response sampled from the seed's own stream (greedy at temperature 0) up to the first
    stop token, decoded with its special tokens (which :func:`~tether.feedback.revise.clean_reply` removes).
    ``reply_batch`` answers several conversations in one generate call, left-padded, each row from its own seed."""

    def __init__(self, model, tokenizer, generation: GenerationConfig):
        if not getattr(tokenizer, "chat_template", None):
            raise ModelLoadError("the model's tokenizer has no chat template, and `tether cai revise` talks to the "
                                 "model in chat turns: use a chat (instruct) model, or an endpoint (base_url=)")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.generation = generation
        self.stops = stop_token_ids(model, tokenizer)
        self.end_markers = tuple(tokenizer.decode([token]) for token in self.stops)
        self.special_tokens = tuple(tokenizer.all_special_tokens)

    def reply(self, messages: list[dict], seed: int) -> str:
        return self.reply_batch([messages], [seed])[0]

    @torch.no_grad()
    def reply_batch(self, conversations: list[list[dict]], seeds: list[int]) -> list[str]:
        ids = [self.tokenizer(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                              add_special_tokens=False)["input_ids"] for messages in conversations]
        batch = left_pad(ids, self.tokenizer.pad_token_id)
        rollout = generate(self.model, batch["input_ids"], batch["attention_mask"], self.generation, self.stops,
                           self.tokenizer.pad_token_id, seeds=list(seeds) if self.generation.do_sample else None,
                           share_prompts=False)
        # each row up to and including its stop token
        return [self.tokenizer.decode(rollout.response_ids[i][rollout.response_mask[i].bool()], skip_special_tokens=False)
                for i in range(len(ids))]


def model_name(cfg: CAIReviseConfig) -> str:
    """What answered, as the rows record it: the endpoint's model (or URL), else the local model."""
    return (cfg.api_model or cfg.base_url) if cfg.base_url else cfg.model


def generation_settings(cfg: CAIReviseConfig) -> dict[str, Any]:
    """The settings every row records; a resumed file must have been written with the same (a local model's
    precision too)."""
    settings = {"rounds": cfg.rounds, "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
                "top_p": cfg.top_p, "seed": cfg.seed}
    return settings if cfg.base_url else {**settings, "precision": cfg.precision}


def make_chat(cfg: CAIReviseConfig):
    """The endpoint client for ``base_url``, else the local model (loaded now)."""
    if cfg.base_url:
        return EndpointChat(cfg.base_url, cfg.api_model, os.environ.get(cfg.api_key_env, ""),
                            max_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                            timeout=cfg.timeout, retries=cfg.retries)
    model_cfg = ModelConfig(name_or_path=cfg.model, trust_remote_code=cfg.trust_remote_code, precision=cfg.precision)
    tokenizer = load_tokenizer(cfg.model, model_cfg)
    model = load_causal_lm(model_cfg, seed=cfg.seed, pad_token_id=tokenizer.pad_token_id)
    generation = GenerationConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature or 1.0,
                                  top_p=cfg.top_p, do_sample=cfg.temperature > 0)
    return LocalChat(model, tokenizer, generation)


def _prompts(cfg: CAIReviseConfig) -> tuple[list[tuple[int, Any]], int]:
    """Each distinct prompt of ``data.train_file`` once (at most ``max_prompts``), and how many repeats were left
    out."""
    prompts, duplicates = distinct_prompts(load_prompts(cfg.data.train_file))
    if duplicates:
        console.print(f"{cfg.data.train_file}: {duplicates} repeated prompts left out (each prompt is revised once)")
    if cfg.max_prompts and len(prompts) > cfg.max_prompts:
        console.print(f"prompts: using {cfg.max_prompts} of {len(prompts)} (max_prompts)")
        prompts = prompts[:cfg.max_prompts]
    return prompts, duplicates


def _revise_all(chat, todo: list[tuple[int, Any]], constitution: Sequence[Principle], cfg: CAIReviseConfig,
                output: Path, already: int) -> int:
    """Revise the prompts of ``todo``, ``batch_size`` at a time (an endpoint: one at a time), and append each batch's
    rows to ``output`` as soon as they are complete; returns how many were written."""
    name, generation = model_name(cfg), generation_settings(cfg)
    size = 1 if cfg.base_url else cfg.batch_size
    written = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "ab") as handle, tqdm(total=len(todo), desc="cai revise", unit="prompt") as bar:
        for start in range(0, len(todo), size):
            batch = todo[start:start + size]
            try:
                revised = revise_batch(chat, [prompt for _, prompt in batch], constitution, cfg.rounds, cfg.seed)
            except RevisionError as exc:
                raise DataError(f"{cfg.data.train_file} row {batch[exc.item][0]}, step '{exc.step}': {exc.problem}. "
                                f"The {already + written} rows finished before it are safely in {output}: fix the "
                                "problem and run the same command again to go on") from None
            for (row, prompt), done in zip(batch, revised):
                append_row(handle, revision_row(prompt, done, row, name, generation))
            written += len(batch)
            bar.update(len(batch))
    return written


def run_cai_revise(cfg: CAIReviseConfig) -> dict[str, Any]:
    """Respond, critique and revise every prompt not yet in ``cfg.output``; returns the counts."""
    # 1. constitution, prompts, what is done
    constitution = read_constitution(cfg.constitution) if cfg.constitution else DEFAULT_CONSTITUTION
    prompts, duplicates = _prompts(cfg)
    output = Path(cfg.output)
    finished = read_finished(output, model_name(cfg), generation_settings(cfg))
    if finished.dropped is not None:
        console.print(f"[yellow]warning[/]: {output} ended with a partial row (a run stopped while writing it): "
                      f"dropped it ({len(finished.dropped)} characters); its prompt is revised again")
    todo = [(row, prompt) for row, prompt in prompts if prompt_key(prompt) not in finished.rows]
    # 2. the model, only when there is something to do
    chat = make_chat(cfg) if todo else None
    # 3. revise, one complete row at a time
    written = _revise_all(chat, todo, constitution, cfg, output, len(finished.rows)) if todo else 0
    summary = {"output": str(output), "revised": written, "already_done": len(prompts) - len(todo),
               "duplicates": duplicates, "rows": len(finished.rows) + written}
    console.print(f"revised {written} prompts ({summary['already_done']} already done, {duplicates} repeated prompts "
                  f"left out) → {output} ({summary['rows']} rows)")
    return summary
