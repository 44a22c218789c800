"""Configs of the human- and AI-feedback commands (`tether label ...`, `tether cai ...`): the simulated panel, the AI
judge, the web labeling app and its tokens, the agreement report, export to / import from preference files and Label
Studio, and Constitutional AI's critique → revision (SL-CAI)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tether.config.fields import FRACTION, NON_NEGATIVE, POSITIVE, doc_field
from tether.config.sections import DataConfig


@dataclass
class LabelSimulateConfig:
    """Label sampled responses with a simulated annotator panel (`tether label simulate`)."""

    samples: str = doc_field("", "samples.jsonl from `tether sample` (prompt + responses rows).")
    db: str = doc_field("runs/labels.sqlite", "Label store (SQLite) to write.")
    utility: str = doc_field("tether.tasks.helpful:gold_utility", "Gold utility, module:function(prompt, response).")
    panel_size: int = doc_field(5, "Annotators in the panel.", bounds=POSITIVE)
    noise_scale: float = doc_field(1.0, "Multiplies every annotator's noise temperature (0.35-1.0): the gold "
                                        "utility's scale (e.g. 0.25 for VADER's compound score in [-1, 1]).")
    labels_per_item: int = doc_field(3, "Annotators per comparison.", bounds=POSITIVE)
    planted_length_bias: float = doc_field(0.0, "Utility bonus per 100 characters every annotator adds (0 = off).")
    adversarial: int = doc_field(0, "How many of the annotators answer the opposite of their judgement.")
    gold_fraction: float = doc_field(
        0.1, "Fraction of comparisons that are gold questions (answer known, not shown).", bounds=FRACTION)
    pairs_per_prompt: int = doc_field(1, "Comparisons made from each prompt's K responses (mode=pairs).", bounds=POSITIVE)
    mode: Literal["pairs", "ranking"] = doc_field(
        "pairs", "pairs: pick the better of two responses; ranking: rank all K responses of a prompt "
        "(Plackett-Luce), exported as rankings and expanded to C(K,2) pairs for the reward model.")
    seed: int = doc_field(0, "Seed for the panel's noise and the gold-question draw.")


@dataclass
class LabelJudgeConfig:
    """Label comparisons with an AI judge and a written constitution (`tether label judge`)."""

    samples: str = doc_field("", "samples.jsonl from `tether sample` (prompt + responses rows).")
    db: str = doc_field("runs/labels.sqlite", "Label store (SQLite) to write.")
    judge: str = doc_field("embedded", "Local judge model: 'embedded' or an HF directory (ignored with base_url).")
    base_url: str = doc_field("", "OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (empty = local model).")
    api_model: str = doc_field("", "Model name sent to the endpoint.")
    api_key_env: str = doc_field("OPENAI_API_KEY", "Environment variable holding the endpoint's API key.")
    constitution: str = doc_field("", "Text file with one principle per line (empty = the built-in constitution).")
    utility: str = doc_field("tether.tasks.helpful:gold_utility", "Gold utility for the agreement report ('' = none).")
    pairs_per_prompt: int = doc_field(1, "Comparisons made from each prompt's responses.", bounds=POSITIVE)
    max_comparisons: int = doc_field(0, "Judge at most this many comparisons (0 = all).", bounds=NON_NEGATIVE)
    seed: int = doc_field(0, "Seed for the order within pairs and the principle drawn per comparison.")


@dataclass
class LabelServeConfig:
    """The web labeling app (`tether label serve`)."""

    db: str = doc_field("runs/labels.sqlite", "Label store (SQLite); created if missing.")
    samples: str = doc_field("", "Load comparisons from this samples.jsonl first (empty = serve what the store has).")
    pairs_per_prompt: int = doc_field(1, "Comparisons made from each prompt's responses when loading samples.", bounds=POSITIVE)
    mode: Literal["pairs", "ranking"] = doc_field(
        "pairs", "How loaded samples are shown: pairs (pick the better of two) or ranking (rank all K responses).")
    annotators: list = doc_field([], "Annotator names to create; each new one gets a token, printed once.")
    tokens_file: str = doc_field("", "Also write new tokens here (mode 600); default <db stem>.tokens.json.")
    admin_token: str = doc_field("", "Admin token for /admin (empty = keep the stored one, or make one and print it).")
    guidelines: str = doc_field("", "Markdown file of instructions for annotators (or a .txt constitution, one "
                                    "principle per line); empty = the built-in constitution.")
    host: str = doc_field("127.0.0.1", "Interface to bind; 127.0.0.1 keeps the app off the network.")
    port: int = doc_field(8765, "Port.")
    rate_limit: int = doc_field(600, "Labels per annotator per minute (0 = unlimited).")
    seed: int = doc_field(0, "Seed for the response order within loaded pairs.")


@dataclass
class LabelTokensConfig:
    """Rotate annotator or admin tokens of the labeling app (`tether label tokens`)."""

    db: str = doc_field("runs/labels.sqlite", "Label store (SQLite).")
    rotate: list = doc_field([], "Annotators whose tokens to replace; 'admin' = the admin token. Old tokens and "
                                 "their sessions stop working.")
    tokens_file: str = doc_field("", "Write the new tokens here (mode 600, other entries kept); default "
                                     "<db stem>.tokens.json.")


@dataclass
class LabelStatsConfig:
    """Agreement and quality report for a label store (`tether label stats`)."""

    db: str = doc_field("runs/labels.sqlite", "Label store (SQLite).")
    output: str = doc_field("", "Also write the report as JSON here (default: <db stem>.stats.json).")


@dataclass
class LabelExportConfig:
    """Aggregate votes and export preferences.jsonl (`tether label export`)."""

    db: str = doc_field("runs/labels.sqlite", "Label store (SQLite).")
    output: str = doc_field("runs/preferences.jsonl", "TRL-format preference rows with source and agreement.")
    method: Literal["dawid_skene", "majority"] = doc_field("dawid_skene", "How votes become one preference per item.")
    min_agreement: float = doc_field(0.0, "Drop items whose votes agree with the winner less than this (counted).")
    include_gold: bool = doc_field(False, "Also export gold questions.")
    include_both_bad: bool = doc_field(False, "Also export items most annotators marked 'both bad' (from their other "
                                              "votes).")
    format: Literal["trl", "labelstudio"] = doc_field(
        "trl", "trl: aggregated preferences.jsonl; labelstudio: every item and label as Label Studio tasks (JSON).")


@dataclass
class LabelImportConfig:
    """Import a Label Studio JSON export into the label store (`tether label import`)."""

    input: str = doc_field("", "Label Studio JSON export (list of tasks with data prompt/response_a/response_b).")
    db: str = doc_field("runs/labels.sqlite", "Label store (SQLite) to add to.")


@dataclass
class CAIReviseConfig:
    """Constitutional AI's supervised phase: respond, critique and revise each prompt (`tether cai revise`)."""

    data: DataConfig = doc_field(DataConfig(), "Prompts: data.train_file, any format with a prompt (text or messages); "
                                               "only train_file is read.")
    output: str = doc_field("runs/cai/revisions.jsonl", "Rows written here, one per prompt; a rerun resumes it. Each "
                                                        "is also an SFT row: prompt / completion (the final revision).")
    model: str = doc_field("embedded", "Local model that responds, critiques and revises: 'embedded' or an HF "
                                       "directory, prompted through its chat template (ignored with base_url).")
    trust_remote_code: bool = doc_field(False, "Allow model code from the local model's directory (a security risk).")
    precision: Literal["fp32", "bf16-mixed", "bf16", "auto"] = doc_field(
        "fp32", "Numeric precision of the local model, as model.precision (recorded in each row's generation "
                "settings: it changes the samples).")
    base_url: str = doc_field("", "OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (empty = local model).")
    api_model: str = doc_field("", "Model name sent to the endpoint.")
    api_key_env: str = doc_field("OPENAI_API_KEY", "Environment variable holding the endpoint's API key.")
    constitution: str = doc_field("", "File of critique/revision request pairs (.txt, .jsonl or .yaml; "
                                      "docs/feedback.md); empty = the built-in 13 pairs adapted from Bai et al. 2022.")
    rounds: int = doc_field(1, "Critique → revision rounds per prompt; each draws a principle and revises the "
                               "previous revision.", bounds=POSITIVE)
    max_prompts: int = doc_field(0, "Revise at most this many distinct prompts of the file (0 = all).",
                                 bounds=NON_NEGATIVE)
    batch_size: int = doc_field(
        8, "Prompts a local model answers together: each step (response, critique, revision) of a batch is one generate "
           "call, each prompt sampled from its own seeds, and the batch's rows are written when all are complete (an "
           "endpoint is asked one prompt at a time).", bounds=POSITIVE)
    max_new_tokens: int = doc_field(128, "Longest reply of each step (response, critique, revision).", bounds=POSITIVE)
    temperature: float = doc_field(0.7, "Sampling temperature of every step (0 = greedy).", bounds=NON_NEGATIVE)
    top_p: float = doc_field(0.95, "Nucleus sampling, in (0, 1].")
    seed: int = doc_field(0, "Seed: each prompt's principles and samples come from a hash of it and the prompt, so a "
                             "resumed run writes the same rows as an uninterrupted one.")
    timeout: float = doc_field(60.0, "Seconds to wait for one endpoint reply.", bounds=POSITIVE)
    retries: int = doc_field(3, "Retries of a transient endpoint failure (connection refused or reset, timeout, HTTP "
                                "408/409/425/429/5xx), after 1, 2, 4, ... seconds.", bounds=NON_NEGATIVE)
