"""Data: load, validate, tokenise and batch every supported format.

Formats (TRL-compatible): SFT ``prompt``/``completion``, ``messages`` or ``text``;
preference ``prompt``/``chosen``/``rejected`` (+ ``margin``), plain or conversational;
ranking ``prompt``/``responses``/``ranks`` (expanded to C(K,2) pairs); unpaired
``prompt``/``completion``/``label`` (KTO). Files: jsonl, json, parquet, csv, or a saved
HF ``datasets`` directory. Problems raise :class:`DataError` with one line per problem.
"""

from tether.data.collate import collate_pairs, collate_prompts, collate_sft, collate_unpaired, pack_sft
from tether.data.datasets import (
                                  LoadReport,
                                  PairExample,
                                  PromptExample,
                                  SFTExample,
                                  UnpairedExample,
                                  load_preference_dataset,
                                  load_prompt_dataset,
                                  load_sft_dataset,
                                  load_unpaired_dataset,
)
from tether.data.errors import DataError
from tether.data.formats import detect_format
from tether.data.io import load_records
from tether.data.tokenize import encode_prompt, encode_prompt_response

__all__ = [
    "DataError", "LoadReport", "PairExample", "PromptExample", "SFTExample", "UnpairedExample",
    "collate_pairs", "collate_prompts", "collate_sft", "collate_unpaired", "pack_sft", "detect_format",
    "encode_prompt", "encode_prompt_response", "load_preference_dataset", "load_prompt_dataset", "load_records",
    "load_sft_dataset", "load_unpaired_dataset",
]
