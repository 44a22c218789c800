import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tether.data import (
    DataError,
    collate_pairs,
    collate_prompts,
    collate_sft,
    collate_unpaired,
    load_preference_dataset,
    load_prompt_dataset,
    load_records,
    load_sft_dataset,
    load_unpaired_dataset,
    pack_sft,
)

PAIRS = [
    {"prompt": "How do I keep basil alive?", "chosen": "Give it light and water when the soil is dry.",
     "rejected": "Whatever, figure it out."},
    {"prompt": "How can I sleep better?", "chosen": "Keep a steady bedtime.", "rejected": "As an AI I cannot say.",
     "margin": 2.0},
]
IM_END = 2


def _write(tmp_path, name, rows):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif name.endswith(".json"):
        path.write_text(json.dumps(rows))
    elif name.endswith(".csv"):
        import csv

        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            for r in rows:
                writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    elif name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("name", ["p.jsonl", "p.json", "p.csv", "p.parquet", "hf_dir"])
def test_every_file_type_loads_the_same_pairs(tmp_path, tokenizer, name):
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in PAIRS]
    pairs, report = load_preference_dataset(_write(tmp_path, name, rows), tokenizer, max_length=256)
    assert report.n_rows == 2 and report.n_examples == 2 and report.format == "preference"
    assert pairs[0].chosen_text == PAIRS[0]["chosen"]
    assert tokenizer.decode(pairs[1].rejected_ids).startswith("As an AI I cannot say.")


def test_chat_template_is_applied(tokenizer, write_jsonl):
    pairs, _ = load_preference_dataset(write_jsonl("p.jsonl", PAIRS), tokenizer, max_length=256)
    pair = pairs[0]
    messages = [{"role": "user", "content": PAIRS[0]["prompt"]}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": PAIRS[0]["chosen"]}],
                                         tokenize=False)
    assert pair.prompt_ids == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(pair.prompt_ids + pair.chosen_ids) == full
    assert IM_END in pair.chosen_ids[-2:]  # the response ends its turn
    assert pairs[1].margin == 2.0 and pairs[0].margin is None


def test_never_template_appends_eos(tokenizer, write_jsonl):
    pairs, _ = load_preference_dataset(write_jsonl("p.jsonl", PAIRS), tokenizer, max_length=256,
                                       chat_template="never")
    assert pairs[0].chosen_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(pairs[0].prompt_ids) == PAIRS[0]["prompt"]


def test_conversational_and_implicit_prompt(tokenizer, write_jsonl):
    user = [{"role": "user", "content": "Hi there"}]
    rows = [{"prompt": user, "chosen": [{"role": "assistant", "content": "Hello!"}],
             "rejected": [{"role": "assistant", "content": "Go away."}]},
            {"chosen": user + [{"role": "assistant", "content": "Hello!"}],
             "rejected": user + [{"role": "assistant", "content": "Go away."}]}]
    pairs, _ = load_preference_dataset(write_jsonl("c.jsonl", rows), tokenizer, max_length=256)
    assert pairs[0].prompt_ids == pairs[1].prompt_ids
    assert pairs[0].chosen_ids == pairs[1].chosen_ids


def test_ranking_expands_to_all_pairs_and_skips_ties(tokenizer, write_jsonl):
    rows = [{"prompt": "Q1", "responses": ["best", "middle", "worst"], "ranks": [0, 1, 2]},
            {"prompt": "Q2", "responses": ["a", "b", "c", "d"], "ranks": [1, 0, 1, 3]}]
    pairs, report = load_preference_dataset(write_jsonl("r.jsonl", rows), tokenizer, max_length=256)
    assert report.format == "ranking"
    first = [(p.chosen_text, p.rejected_text) for p in pairs if p.source_row == 1]
    assert first == [("best", "middle"), ("best", "worst"), ("middle", "worst")]
    second = {(p.chosen_text, p.rejected_text) for p in pairs if p.source_row == 2}
    assert second == {("b", "a"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")}
    assert report.n_ties_skipped == 1 and len(pairs) == 8
    assert "1 tied pairs skipped" in report.summary()


def test_sft_loss_mask_covers_the_completion(tokenizer, write_jsonl):
    rows = [{"prompt": "Say hi", "completion": "Hi!"}]
    path = write_jsonl("s.jsonl", rows)
    (example,), _ = load_sft_dataset(path, tokenizer, max_length=256)
    n_prompt = example.loss_mask.index(1)
    assert tokenizer.decode(example.input_ids[n_prompt:]) == "Hi!<|im_end|>\n"
    assert all(m == 0 for m in example.loss_mask[:n_prompt]) and all(example.loss_mask[n_prompt:])
    (full,), _ = load_sft_dataset(path, tokenizer, max_length=256, completion_only_loss=False)
    assert all(full.loss_mask)


def test_sft_messages_and_text_formats(tokenizer, write_jsonl):
    msgs = [{"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi!"}]}]
    (m,), report = load_sft_dataset(write_jsonl("m.jsonl", msgs), tokenizer, max_length=256)
    (pc,), _ = load_sft_dataset(write_jsonl("pc.jsonl", [{"prompt": "Say hi", "completion": "Hi!"}]), tokenizer,
                                max_length=256)
    assert report.format == "sft_messages" and m.input_ids == pc.input_ids and m.loss_mask == pc.loss_mask
    (text,), report = load_sft_dataset(write_jsonl("t.jsonl", [{"text": "Plain text."}]), tokenizer, max_length=256)
    assert report.format == "sft_text" and text.input_ids[-1] == tokenizer.eos_token_id and all(text.loss_mask)


def test_overlong_truncate_skip_and_error(tokenizer, write_jsonl):
    rows = PAIRS + [{"prompt": "Tell me " * 100, "chosen": "word " * 300, "rejected": "no."}]
    path = write_jsonl("o.jsonl", rows)
    pairs, report = load_preference_dataset(path, tokenizer, max_length=128, max_prompt_length=64)
    assert report.n_truncated == 1 and len(pairs) == 3
    long = pairs[2]
    assert len(long.prompt_ids) == 64 and len(long.prompt_ids) + len(long.chosen_ids) == 128
    full, _ = load_preference_dataset(path, tokenizer, max_length=4096)
    assert long.prompt_ids == full[2].prompt_ids[-64:]  # the END of the prompt is kept (left truncation)
    assert long.chosen_ids == full[2].chosen_ids[:64]  # the START of the response is kept
    assert "prompt truncated from the left" in report.summary()
    pairs, report = load_preference_dataset(path, tokenizer, max_length=128, max_prompt_length=64, overlong="skip")
    assert report.n_skipped_overlong == 1 and len(pairs) == 2 and "skipped" in report.summary()
    with pytest.raises(DataError) as info:
        load_preference_dataset(path, tokenizer, max_length=128, max_prompt_length=64, overlong="error")
    (line,) = info.value.problems
    assert line.startswith(f"{path} row 3: sequence of") and "max_length=128" in line


def test_unpaired_and_prompts(tokenizer, write_jsonl):
    kto = [{"prompt": "Hi", "completion": "Hello!", "label": True},
           {"prompt": "Hi", "completion": "Go away.", "label": False}]
    examples, _ = load_unpaired_dataset(write_jsonl("k.jsonl", kto), tokenizer, max_length=128)
    assert [e.desirable for e in examples] == [True, False]
    from_pairs, report = load_unpaired_dataset(write_jsonl("p.jsonl", PAIRS), tokenizer, max_length=128)
    assert [e.desirable for e in from_pairs] == [True, False, True, False] and report.n_examples == 4
    prompts, _ = load_prompt_dataset(write_jsonl("p2.jsonl", PAIRS), tokenizer)
    assert tokenizer.decode(prompts[0].prompt_ids).endswith("<|im_start|>assistant\n")


def test_collate_shapes_and_padding(tokenizer, write_jsonl):
    pairs, _ = load_preference_dataset(write_jsonl("p.jsonl", PAIRS), tokenizer, max_length=256)
    batch = collate_pairs(pairs, pad_token_id=0)
    n = len(pairs[0].prompt_ids) + len(pairs[0].chosen_ids)
    assert batch["input_ids"].shape[0] == 4
    assert batch["input_ids"][0, :n].tolist() == pairs[0].prompt_ids + pairs[0].chosen_ids
    assert batch["loss_mask"][0].sum().item() == len(pairs[0].chosen_ids)
    assert batch["loss_mask"][2].sum().item() == len(pairs[0].rejected_ids)
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all()
    assert batch["margin"].tolist() == [0.0, 2.0] and batch["has_margin"]
    prompts, _ = load_prompt_dataset(write_jsonl("q.jsonl", PAIRS), tokenizer)
    left = collate_prompts(prompts, pad_token_id=0)
    shorter = min(range(2), key=lambda i: len(prompts[i].prompt_ids))
    assert left["attention_mask"][shorter, 0].item() == 0 and left["attention_mask"][:, -1].tolist() == [1, 1]
    kto, _ = load_unpaired_dataset(write_jsonl("k.jsonl", PAIRS), tokenizer, max_length=256)
    assert collate_unpaired(kto, 0)["desirable"].tolist() == [True, False, True, False]


def test_packing_keeps_every_token(tokenizer, write_jsonl):
    rows = [{"prompt": f"Question {i}?", "completion": f"Answer {i}."} for i in range(6)]
    examples, _ = load_sft_dataset(write_jsonl("s.jsonl", rows), tokenizer, max_length=128)
    packed = pack_sft(examples, max_length=100)
    assert sum(len(p.input_ids) for p in packed) == sum(len(e.input_ids) for e in examples)
    assert all(len(p.input_ids) <= 100 for p in packed) and len(packed) < len(examples)
    assert packed[0].position_ids[0] == 0 and packed[0].position_ids.count(0) >= 2
    batch = collate_sft(packed, 0)
    assert "position_ids" in batch and batch["position_ids"].shape == batch["input_ids"].shape


def test_records_from_json_wrapper(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"data": [{"prompt": "a"}]}))
    assert load_records(path) == [{"prompt": "a"}]
