"""`tether cai revise` (SL-CAI, Bai et al. 2022): response → critique → revision, into revisions.jsonl.

A tiny random model (SmolLM2's tokenizer and chat template, 2 layers × 64) answers locally, so its texts are
gibberish: the local tests check what a correct run guarantees whatever the text is (the exact schema, the exact
conversation each step was sampled from, reproducibility, resumption), and the endpoint tests — a chat-completions
server started here that answers from the conversation it is sent — check the exact messages and the parsing.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import torch

from tether.config import CAIReviseConfig, ConfigError, DataConfig, load_config
from tether.data import DataError, load_sft_dataset
from tether.feedback import revise as revise_module
from tether.feedback.revise import (
    DEFAULT_CONSTITUTION,
    Principle,
    clean_reply,
    prompt_seed,
    read_constitution,
    step_seed,
)
from tether.recipes import cai
from tether.recipes.cai import run_cai_revise

PROMPTS = ["How do I boil an egg?", "Name a colour.", "How do I boil an egg?", "Is the sea salty?"]
DISTINCT = ["How do I boil an egg?", "Name a colour.", "Is the sea salty?"]  # row 3 repeats row 1
ROW_KEYS = ["prompt", "completion", "original_response", "rounds", "source_row", "model", "generation"]
ROUND_KEYS = ["principle", "critique_request", "critique", "revision_request", "revision"]
SEED = 3
STEPS_PER_PROMPT = 5  # rounds=2: a response, then a critique and a revision per round


def _prompt_file(path: Path, prompts=PROMPTS) -> Path:
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny random chat model saved as an HF directory (the embedded tokenizer, its chat template included)."""
    from tests.helpers import tiny_model_config
    from tether.models.embedded import load_embedded_tokenizer
    from tether.models.loading import load_causal_lm, save_model

    folder = tmp_path_factory.mktemp("tiny") / "model"
    save_model(load_causal_lm(tiny_model_config(), seed=0), load_embedded_tokenizer(), folder, {"recipe": "test"})
    return folder


def _local_cfg(tiny_dir, train_file, output, **extra) -> CAIReviseConfig:
    settings = dict(rounds=2, max_new_tokens=6, temperature=0.8, top_p=1.0, seed=SEED) | extra
    return CAIReviseConfig(data=DataConfig(train_file=str(train_file)), output=str(output), model=str(tiny_dir),
                           **settings)


@pytest.fixture(scope="module")
def uninterrupted(tiny_dir, tmp_path_factory):
    """One uninterrupted local run over PROMPTS: (its config, summary, the bytes of revisions.jsonl)."""
    where = tmp_path_factory.mktemp("uninterrupted")
    cfg = _local_cfg(tiny_dir, _prompt_file(where / "prompts.jsonl"), where / "revisions.jsonl")
    summary = run_cai_revise(cfg)
    return cfg, summary, (where / "revisions.jsonl").read_bytes()


# ------------------------------------------------------------------------------------------------ 1. local model


def test_local_model_writes_one_complete_row_per_prompt(uninterrupted, tiny_dir, tokenizer):
    """Caught: a repeated prompt revised twice, a missing or renamed field, a completion that is not the last
    revision, round 2 critiquing the original response instead of round 1's revision, a step sampled from another
    conversation or seed than documented."""
    cfg, summary, data = uninterrupted
    assert summary == {"output": cfg.output, "revised": 3, "already_done": 0, "duplicates": 1, "rows": 3}
    rows = [json.loads(line) for line in data.decode().splitlines()]
    assert [r["prompt"] for r in rows] == DISTINCT and [r["source_row"] for r in rows] == [1, 2, 4]
    principles = {p.name: p for p in DEFAULT_CONSTITUTION}
    for row in rows:
        assert list(row) == ROW_KEYS
        assert row["model"] == str(tiny_dir)
        assert row["generation"] == {"rounds": 2, "max_new_tokens": 6, "temperature": 0.8, "top_p": 1.0, "seed": SEED,
                                    "precision": "fp32"}
        assert len(row["rounds"]) == 2 and all(list(r) == ROUND_KEYS for r in row["rounds"])
        for r in row["rounds"]:
            principle = principles[r["principle"]]
            assert (r["critique_request"], r["revision_request"]) == (principle.critique_request,
                                                                      principle.revision_request)
        texts = [row["original_response"]] + [r[k] for r in row["rounds"] for k in ("critique", "revision")]
        assert all(isinstance(t, str) and t and t == t.strip() for t in texts)
        assert row["completion"] == row["rounds"][-1]["revision"]

    # round 2's critique of row 1, recomputed here from the documented conversation and seed: the prompt, round 1's
    # revision as the assistant's answer, the drawn principle's critique request; the chat template's generation
    # prompt; one sample from the step's own stream (seed = step_seed(prompt_seed(seed, prompt), 1, "critique"))
    from tether.config import ModelConfig
    from tether.models.loading import load_causal_lm
    from tether.rollout.generation import GenerationConfig, generate

    row = rows[0]
    messages = [{"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row["rounds"][0]["revision"]},
                {"role": "user", "content": row["rounds"][1]["critique_request"]}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                        return_dict=True)["input_ids"]
    model = load_causal_lm(ModelConfig(name_or_path=str(tiny_dir)))
    seed = step_seed(prompt_seed(SEED, row["prompt"]), 1, "critique")
    out = generate(model, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long),
                   GenerationConfig(max_new_tokens=6, temperature=0.8, top_p=1.0), [tokenizer.eos_token_id],
                   tokenizer.pad_token_id, seeds=[seed], share_prompts=False)
    text = tokenizer.decode(out.response_ids[0][out.response_mask[0].bool()], skip_special_tokens=True).strip()
    assert row["rounds"][1]["critique"] == text


def test_revisions_jsonl_is_an_sft_file(uninterrupted, tmp_path, tokenizer):
    """`tether sft data.train_file=.../revisions.jsonl` reads it: prompt/completion rows whose completion tokens are
    the final revision (and the end of the assistant's turn)."""
    cfg, _, data = uninterrupted
    path = tmp_path / "revisions.jsonl"
    path.write_bytes(data)
    rows = _read(path)
    examples, report = load_sft_dataset(path, tokenizer, max_length=1024)
    assert report.format == "sft_prompt_completion" and len(examples) == len(rows) == 3
    for example, row in zip(examples, rows):
        completion = [t for t, m in zip(example.input_ids, example.loss_mask) if m]
        assert tokenizer.decode(completion) == row["completion"] + "<|im_end|>\n"
        prompt = tokenizer.decode([t for t, m in zip(example.input_ids, example.loss_mask) if not m])
        assert prompt.endswith(f"<|im_start|>user\n{row['prompt']}<|im_end|>\n<|im_start|>assistant\n")


# ------------------------------------------------------------------------------------------------ 2. resume


def test_a_run_killed_halfway_resumes_to_the_uninterrupted_file(uninterrupted, tiny_dir, tmp_path, monkeypatch):
    """Batches of 2: killed in the middle of the second batch's steps (the third prompt's first revision), the first
    batch's two rows are on disk and the third is not; the rerun revises only what is missing and the file is byte
    for byte the uninterrupted run's (which answered all three in one batch).

    Caught: rows buffered instead of written when their batch is complete (nothing on disk after the kill),
    dropping the skip of finished prompts (rows repeated, more steps sampled), one random stream for the whole run
    or seeds from a prompt's place in its batch (the resumed rows differ)."""
    _, _, expected = uninterrupted
    output = tmp_path / "revisions.jsonl"
    cfg = _local_cfg(tiny_dir, _prompt_file(tmp_path / "prompts.jsonl"), output, batch_size=2)
    original, calls = cai.LocalChat.reply_batch, []

    def killed_at_call_8(self, conversations, seeds):
        calls.append(list(seeds))
        if len(calls) == STEPS_PER_PROMPT + 3:  # batch 1: 5 steps of 2 prompts; batch 2: response, critique, revision
            raise KeyboardInterrupt
        return original(self, conversations, seeds)

    monkeypatch.setattr(cai.LocalChat, "reply_batch", killed_at_call_8)
    with pytest.raises(KeyboardInterrupt):
        run_cai_revise(cfg)
    assert [len(seeds) for seeds in calls] == [2] * STEPS_PER_PROMPT + [1] * 3
    assert output.read_bytes() == b"".join(expected.splitlines(keepends=True)[:2])

    calls.clear()
    monkeypatch.setattr(cai.LocalChat, "reply_batch", lambda self, conversations, seeds: (
        calls.append(list(seeds)), original(self, conversations, seeds))[1])
    summary = run_cai_revise(cfg)
    assert summary["revised"] == 1 and summary["already_done"] == 2 and summary["rows"] == 3
    assert [len(seeds) for seeds in calls] == [1] * STEPS_PER_PROMPT  # only the missing prompt was sampled
    assert output.read_bytes() == expected

    assert run_cai_revise(cfg)["revised"] == 0 and len(calls) == STEPS_PER_PROMPT  # finished: nothing to do
    assert output.read_bytes() == expected


def test_a_batch_asks_each_step_once_for_all_its_prompts_with_each_prompts_own_seeds(uninterrupted, tiny_dir,
                                                                                       tmp_path, monkeypatch):
    """One generate call per step for the whole batch, each row with the seed of its own prompt and step.
    Caught: one call per prompt (no batching), seeds shared across the batch or taken from the batch position."""
    original, calls = cai.LocalChat.reply_batch, []
    monkeypatch.setattr(cai.LocalChat, "reply_batch", lambda self, conversations, seeds: (
        calls.append(list(seeds)), original(self, conversations, seeds))[1])
    run_cai_revise(_local_cfg(tiny_dir, _prompt_file(tmp_path / "prompts.jsonl"), tmp_path / "revisions.jsonl"))
    steps = [(0, "response"), (0, "critique"), (0, "revision"), (1, "critique"), (1, "revision")]
    assert calls == [[step_seed(prompt_seed(SEED, p), r, step) for p in DISTINCT] for r, step in steps]
    assert (tmp_path / "revisions.jsonl").read_bytes() == uninterrupted[2]


class BatchChat:
    """A chat with reply_batch that answers "text <seed>", except that the seeds in ``empty`` get an empty reply;
    it records every call as ("batch" | "one", seeds)."""

    end_markers, special_tokens = (), ()

    def __init__(self, empty=()):
        self.empty, self.calls = set(empty), []

    def _text(self, seed):
        return "" if seed in self.empty else f"text {seed}"

    def reply_batch(self, conversations, seeds):
        self.calls.append(("batch", list(seeds)))
        return [self._text(seed) for seed in seeds]

    def reply(self, messages, seed):
        self.calls.append(("one", [seed]))
        return self._text(seed)


def test_an_empty_reply_in_a_batch_is_sampled_again_on_its_own():
    """Only the prompt whose reply was empty is asked again, alone, with its step's next retry seed; the others keep
    their first reply. Caught: the whole batch asked again, the retry with the first seed or another prompt's."""
    prompts = ["a", "b", "c"]
    bases = [prompt_seed(SEED, p) for p in prompts]
    first = step_seed(bases[1], 0, "response")
    chat = BatchChat(empty={first})
    revised = revise_module.revise_batch(chat, prompts, DEFAULT_CONSTITUTION, 1, SEED)
    again = revise_module.retry_seed(first, 1)
    assert chat.calls[:2] == [("batch", [step_seed(b, 0, "response") for b in bases]), ("one", [again])]
    assert [r["original_response"] for r in revised] == [f"text {step_seed(bases[0], 0, 'response')}",
                                                          f"text {again}", f"text {step_seed(bases[2], 0, 'response')}"]
    assert len(chat.calls) == 4  # then the critique and the revision, each one call for the three


def test_a_prompt_that_stays_empty_in_a_batch_names_its_own_row(tiny_dir, tmp_path, monkeypatch):
    """The error names the failing prompt's row of the file (row 2: the second distinct prompt), not its batch's
    first; nothing of the batch is written. Caught: item ignored (row 1 named), a half-finished batch written."""
    base = prompt_seed(SEED, DISTINCT[1])
    own = step_seed(base, 0, "critique")
    empty = {revise_module.retry_seed(own, attempt) for attempt in range(revise_module.EMPTY_TRIES)}
    monkeypatch.setattr(cai, "make_chat", lambda cfg: BatchChat(empty=empty))
    output = tmp_path / "revisions.jsonl"
    with pytest.raises(DataError) as error:
        run_cai_revise(_local_cfg(tiny_dir, _prompt_file(tmp_path / "prompts.jsonl"), output))
    assert str(error.value).startswith(f"{tmp_path / 'prompts.jsonl'} row 2, step 'critique (round 1)': the model's "
                                       "critique was empty after cleaning 3 times")
    assert "The 0 rows finished before it are safely in" in str(error.value)
    assert output.read_bytes() == b""


@pytest.mark.parametrize("damage", ["cut in the middle", "cut before its newline", "zeros after a crash"])
def test_a_partial_last_line_is_dropped_with_a_warning_and_rewritten(uninterrupted, tiny_dir, tmp_path, capsys,
                                                                     damage):
    """Caught: appending after a partial line (two rows on one line), keeping it as a row, or failing on it."""
    _, _, expected = uninterrupted
    lines = expected.splitlines(keepends=True)
    last = {"cut in the middle": lines[-1][:40], "cut before its newline": lines[-1][:-1],
            "zeros after a crash": b"\x00" * 64 + b"\n"}[damage]
    output = tmp_path / "revisions.jsonl"
    output.write_bytes(b"".join(lines[:2]) + last)
    summary = run_cai_revise(_local_cfg(tiny_dir, _prompt_file(tmp_path / "prompts.jsonl"), output))
    assert summary["revised"] == 1 and summary["rows"] == 3
    assert output.read_bytes() == expected
    err = " ".join(capsys.readouterr().err.split())
    assert f"warning: {output} ended with a partial row" in err and "its prompt is revised again" in err


def test_the_local_model_computes_in_the_configured_precision(uninterrupted, tiny_dir, tmp_path):
    """Caught: precision= ignored (the model loaded in fp32), or not recorded (a resume in fp32 accepted)."""
    cfg = _local_cfg(tiny_dir, _prompt_file(tmp_path / "prompts.jsonl"), tmp_path / "revisions.jsonl",
                     precision="bf16", max_prompts=1)
    chat = cai.make_chat(cfg)
    assert {p.dtype for p in chat.model.parameters()} == {torch.bfloat16}
    run_cai_revise(cfg)
    row = json.loads((tmp_path / "revisions.jsonl").read_text().splitlines()[0])
    assert row["generation"]["precision"] == "bf16"
    with pytest.raises(DataError, match="'precision': 'bf16'}; this run has"):
        run_cai_revise(_local_cfg(tiny_dir, cfg.data.train_file, cfg.output, max_prompts=1))


def test_a_bad_line_inside_the_file_or_another_setting_is_an_error(uninterrupted, tiny_dir, tmp_path):
    _, _, expected = uninterrupted
    lines = expected.splitlines(keepends=True)
    output = tmp_path / "revisions.jsonl"
    output.write_bytes(lines[0] + b"{oops\n" + lines[1])
    prompts = _prompt_file(tmp_path / "prompts.jsonl")
    with pytest.raises(DataError) as error:
        run_cai_revise(_local_cfg(tiny_dir, prompts, output))
    assert str(error.value).startswith(f"{output} line 2: not a row of `tether cai revise` (not a JSON object)")
    output.write_bytes(lines[0])
    with pytest.raises(DataError) as error:
        run_cai_revise(_local_cfg(tiny_dir, prompts, output, seed=4))
    assert str(error.value).startswith(f"{output} line 1 was written with model '{tiny_dir}' and generation "
                                       "{'rounds': 2, 'max_new_tokens': 6, 'temperature': 0.8, 'top_p': 1.0, "
                                       "'seed': 3, 'precision': 'fp32'}; this run has")
    assert output.read_bytes() == lines[0]  # untouched


def test_a_prompt_gets_the_same_row_wherever_it_is_in_the_file(uninterrupted, tiny_dir, tmp_path):
    """Per-prompt seeds: the rows of a file holding two of the prompts, in the other order, are the uninterrupted
    run's rows for them (only source_row differs). Caught: seeds from a prompt's position, or one shared stream."""
    _, _, expected = uninterrupted
    by_prompt = {r["prompt"]: r for r in (json.loads(line) for line in expected.decode().splitlines())}
    output = tmp_path / "revisions.jsonl"
    run_cai_revise(_local_cfg(tiny_dir, _prompt_file(tmp_path / "p.jsonl", [DISTINCT[2], DISTINCT[0]]), output))
    rows = _read(output)
    assert [r["source_row"] for r in rows] == [1, 2]
    assert [{**r, "source_row": 0} for r in rows] == [{**by_prompt[p], "source_row": 0} for p in (DISTINCT[2],
                                                                                                    DISTINCT[0])]


# ------------------------------------------------------------------------------------------------ 3. endpoint


class ChatServer:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 that records every request and answers from the
    conversation: 1 message → a response, 3 → a critique, 5 → a revision, each with the clutter a model adds
    (an echoed label, an end-of-turn token and a run-on after it). ``faults`` maps a request number (1-based) to
    a canned failure: (HTTP status, body bytes)."""

    def __init__(self, faults: dict[int, tuple[int, bytes]] | None = None):
        self.requests: list[dict] = []
        self.faults = faults or {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                status, data = server.faults.get(len(server.requests), (200, None))
                if data is None:
                    data = json.dumps({"choices": [{"message": {"role": "assistant",
                                                                "content": server.answer(body["messages"])}}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.http = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_port}/v1"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @staticmethod
    def answer(messages: list[dict]) -> str:
        prompt = messages[0]["content"] if messages[0]["role"] == "user" else messages[1]["content"]
        turn = (len(messages) - (messages[0]["role"] == "system")) // 2  # 0: response, 1: critique, 2: revision
        latest = messages[-2]["content"] if turn else ""
        return [f"Assistant: An answer to {prompt}<|im_end|>\n<|im_start|>user\nrun-on",
                f"**Critique:** too short: {latest}",
                f"Revision:  A better answer to {prompt} (was: {latest[-12:]})\n<|im_end|>"][turn]

    def close(self):
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def chat_server():
    servers = []

    def start(faults=None):
        servers.append(ChatServer(faults))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


CONSTITUTION_TXT = """# two principles
name: kind
critique: Is the answer unkind?
revision: Rewrite it kindly.

critique: Is the answer wrong?
revision: Rewrite it correctly.
"""
KIND, CORRECT = Principle("kind", "Is the answer unkind?", "Rewrite it kindly."), \
    Principle("principle-2", "Is the answer wrong?", "Rewrite it correctly.")


def _endpoint_cfg(tmp_path, url, prompts=DISTINCT[:2], **extra) -> CAIReviseConfig:
    constitution = tmp_path / "principles.txt"
    constitution.write_text(CONSTITUTION_TXT)
    settings = dict(rounds=2, max_new_tokens=32, temperature=0.5, top_p=0.9, seed=10, retries=0) | extra
    return CAIReviseConfig(data=DataConfig(train_file=str(_prompt_file(tmp_path / "prompts.jsonl", prompts))),
                           output=str(tmp_path / "revisions.jsonl"), base_url=url, api_model="critic",
                           constitution=str(constitution), **settings)


def _expected_endpoint_row(prompt: str, source_row: int) -> tuple[dict, list[list[dict]]]:
    """The row the server's answers must give for ``prompt`` (seed 10, rounds 2), and the five conversations sent.
    The principles are drawn as documented: random.Random(prompt seed), one randrange per round."""
    rng = random.Random(prompt_seed(10, prompt))
    drawn = [(KIND, CORRECT)[rng.randrange(2)] for _ in range(2)]
    response = f"An answer to {prompt}"
    user = {"role": "user", "content": prompt}
    sent, rounds, latest = [[user]], [], response
    for principle in drawn:
        critique = f"too short: {latest}"
        revision = f"A better answer to {prompt} (was: {critique[-12:]})"
        asked = [user, {"role": "assistant", "content": latest}, {"role": "user", "content": principle.critique_request}]
        sent += [asked, asked + [{"role": "assistant", "content": critique},
                                 {"role": "user", "content": principle.revision_request}]]
        rounds.append({"principle": principle.name, "critique_request": principle.critique_request,
                       "critique": critique, "revision_request": principle.revision_request, "revision": revision})
        latest = revision
    row = {"prompt": prompt, "completion": latest, "original_response": response, "rounds": rounds,
           "source_row": source_row, "model": "critic",
           "generation": {"rounds": 2, "max_new_tokens": 32, "temperature": 0.5, "top_p": 0.9, "seed": 10}}
    return row, sent


def test_endpoint_gets_the_documented_messages_and_its_replies_fill_the_row(tmp_path, chat_server, monkeypatch):
    """Caught: a message missing, reordered or reworded; the previous revision not carried into the next round; the
    principle's critique request paired with another principle's revision request; a label echo, an end-of-turn
    token or the run-on after it left in the text; the API key or sampling settings not sent."""
    server = chat_server()
    monkeypatch.setenv("OPENAI_API_KEY", "secret")
    summary = run_cai_revise(_endpoint_cfg(tmp_path, server.url))
    assert summary == {"output": str(tmp_path / "revisions.jsonl"), "revised": 2, "already_done": 0, "duplicates": 0,
                       "rows": 2}
    rows = _read(tmp_path / "revisions.jsonl")
    expected = [_expected_endpoint_row(p, i) for i, p in enumerate(DISTINCT[:2], start=1)]
    assert rows == [row for row, _ in expected]
    assert [[r["principle"] for r in row["rounds"]] for row in rows] == [["principle-2", "kind"], ["kind", "principle-2"]]
    steps = ["response", "critique", "revision", "critique", "revision"]
    bodies = []
    for prompt, (_, sent) in zip(DISTINCT[:2], expected):
        base = prompt_seed(10, prompt)
        seeds = [step_seed(base, 0, "response")] + [step_seed(base, r, s) for r in range(2) for s in steps[1:3]]
        bodies += [{"model": "critic", "messages": messages, "max_tokens": 32, "temperature": 0.5, "top_p": 0.9,
                    "seed": seed % 2**31} for messages, seed in zip(sent, seeds)]
    assert [r["body"] for r in server.requests] == bodies
    assert {(r["path"], r["auth"]) for r in server.requests} == {("/v1/chat/completions", "Bearer secret")}


def test_chat_format_prompts_are_sent_as_their_messages(tmp_path, chat_server):
    server = chat_server()
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}]
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": prompt + [{"role": "assistant", "content": "old answer"}]}) + "\n")
    cfg = _endpoint_cfg(tmp_path, server.url, rounds=1)
    cfg.data.train_file = str(path)
    run_cai_revise(cfg)
    (row,) = _read(tmp_path / "revisions.jsonl")
    assert row["prompt"] == prompt  # the last assistant turn of a messages row is not part of the prompt
    assert server.requests[0]["body"]["messages"] == prompt
    assert server.requests[1]["body"]["messages"][:3] == prompt + [{"role": "assistant",
                                                                    "content": "An answer to Why is the sky blue?"}]
    assert row["completion"] == "A better answer to Why is the sky blue? (was: he sky blue?)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_endpoint_is_one_clear_error_naming_the_url(tmp_path, monkeypatch):
    """Retried with backoff (1 s, then 2 s), then one error naming the URL; nothing written."""
    port = _free_port()
    waits = []
    monkeypatch.setattr(revise_module.time, "sleep", waits.append)
    cfg = _endpoint_cfg(tmp_path, f"http://127.0.0.1:{port}/v1", retries=2)
    with pytest.raises(DataError) as error:
        run_cai_revise(cfg)
    message = str(error.value)
    assert message.startswith(f"{cfg.data.train_file} row 1, step 'response': cannot reach the endpoint "
                              f"http://127.0.0.1:{port}/v1/chat/completions (")
    assert "is the server running, and is base_url right? (after 3 tries)" in message
    assert message.endswith(f"The 0 rows finished before it are safely in {cfg.output}: fix the problem and run "
                            "the same command again to go on")
    assert waits == [1.0, 2.0]
    assert Path(cfg.output).read_bytes() == b""


def test_the_cli_reports_an_unreachable_endpoint_without_a_traceback(tmp_path):
    port = _free_port()
    prompts = _prompt_file(tmp_path / "prompts.jsonl")
    result = subprocess.run([sys.executable, "-m", "tether.cli", "cai", "revise", f"data.train_file={prompts}",
                             f"base_url=http://127.0.0.1:{port}/v1", "retries=0", f"output={tmp_path / 'r.jsonl'}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = " ".join(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert f"row 1, step 'response': cannot reach the endpoint http://127.0.0.1:{port}/v1/chat/completions" in errors


@pytest.mark.parametrize("fault, step, problem", [
    ((200, b"<html>oops"), "critique (round 1)", "replied with something that is not JSON: '<html>oops'"),
    ((200, b'{"choices": [{"message": {"role": "assistant"}}]}'), "critique (round 1)",
     'replied without choices[0].message.content text: {"choices": [{"message": {"role": "assistant"}}]}'),
    ((200, b'{"choices": []}'), "critique (round 1)", 'replied without choices[0].message.content text: {"choices": []}'),
    ((401, b'{"error": "bad key"}'), "critique (round 1)", "answered HTTP 401 Unauthorized: '{\"error\": \"bad key\"}'"),
])
def test_a_bad_reply_names_the_row_and_step_and_keeps_the_finished_rows(tmp_path, chat_server, monkeypatch, fault,
                                                                         step, problem):
    """The second prompt's critique (request 7) fails: the first row is on disk, complete; the error names row 2
    and the step, and the reply is not retried (it is not a transient failure); a rerun against a healthy server
    completes the file as an uninterrupted run writes it."""
    monkeypatch.setattr(revise_module.time, "sleep", lambda seconds: None)
    server = chat_server({STEPS_PER_PROMPT + 2: fault})
    cfg = _endpoint_cfg(tmp_path, server.url, retries=2)
    with pytest.raises(DataError) as error:
        run_cai_revise(cfg)
    url = f"{server.url}/chat/completions"
    assert str(error.value) == (f"{cfg.data.train_file} row 2, step '{step}': "
                                f"{'' if problem.startswith('the model') else url + ' '}{problem}. The 1 rows "
                                f"finished before it are safely in {cfg.output}: fix the problem and run the same "
                                "command again to go on")
    assert len(server.requests) == STEPS_PER_PROMPT + 2  # no retry
    assert _read(Path(cfg.output)) == [_expected_endpoint_row(DISTINCT[0], 1)[0]]
    server.faults.clear()
    assert run_cai_revise(cfg)["revised"] == 1
    assert _read(Path(cfg.output)) == [_expected_endpoint_row(p, i)[0] for i, p in enumerate(DISTINCT[:2], start=1)]


EMPTY = (200, json.dumps({"choices": [{"message": {"content": "Critique: <|im_end|>"}}]}).encode())


def test_an_empty_reply_is_sampled_again_with_another_seed(tmp_path, chat_server):
    """The second prompt's first critique (request 7) comes back empty after cleaning: it is asked again, with the
    documented retry seed, and the row is the one a healthy server gives. Caught: failing at once (the run could
    never get past that prompt: its seeds are fixed), or retrying with the same seed."""
    server = chat_server({STEPS_PER_PROMPT + 2: EMPTY})
    cfg = _endpoint_cfg(tmp_path, server.url)
    assert run_cai_revise(cfg)["revised"] == 2
    assert len(server.requests) == 2 * STEPS_PER_PROMPT + 1
    first, again = server.requests[STEPS_PER_PROMPT + 1]["body"], server.requests[STEPS_PER_PROMPT + 2]["body"]
    assert first["messages"] == again["messages"]
    own = revise_module.step_seed(prompt_seed(10, DISTINCT[1]), 0, "critique")
    assert first["seed"] == own % 2**31  # (the endpoint is sent the seed modulo 2³¹)
    assert again["seed"] == revise_module.retry_seed(own, 1) % 2**31 != first["seed"]
    assert revise_module.retry_seed(own, 1) == revise_module._hash_int(own, "again", 1)  # as documented
    assert _read(Path(cfg.output)) == [_expected_endpoint_row(p, i)[0] for i, p in enumerate(DISTINCT[:2], start=1)]


def test_a_step_that_stays_empty_fails_after_three_tries_naming_row_and_step(tmp_path, chat_server):
    faults = {STEPS_PER_PROMPT + 2 + i: EMPTY for i in range(revise_module.EMPTY_TRIES)}
    server = chat_server(faults)
    cfg = _endpoint_cfg(tmp_path, server.url)
    with pytest.raises(DataError) as error:
        run_cai_revise(cfg)
    assert str(error.value) == (f"{cfg.data.train_file} row 2, step 'critique (round 1)': the model's critique was "
                                "empty after cleaning 3 times, each sampled with another seed (last raw reply "
                                "'Critique: <|im_end|>'). The 1 rows finished before it are safely in "
                                f"{cfg.output}: fix the problem and run the same command again to go on")
    assert len(server.requests) == STEPS_PER_PROMPT + 1 + 3
    assert _read(Path(cfg.output)) == [_expected_endpoint_row(DISTINCT[0], 1)[0]]


def test_transient_http_errors_are_retried_with_backoff(tmp_path, chat_server, monkeypatch):
    waits = []
    monkeypatch.setattr(revise_module.time, "sleep", waits.append)
    server = chat_server({1: (503, b"busy"), 2: (429, b"slow down"), 4: (502, b"")})
    run_cai_revise(_endpoint_cfg(tmp_path, server.url, retries=2))
    assert waits == [1.0, 2.0, 1.0]  # each step's backoff starts again at 1 s
    assert len(server.requests) == 2 * STEPS_PER_PROMPT + 3
    assert _read(tmp_path / "revisions.jsonl") == [_expected_endpoint_row(p, i)[0]
                                                   for i, p in enumerate(DISTINCT[:2], start=1)]


# ------------------------------------------------------------------------------------------------ 4. constitution


def test_the_built_in_constitution():
    assert 8 <= len(DEFAULT_CONSTITUTION) <= 16
    assert len({p.name for p in DEFAULT_CONSTITUTION}) == len(DEFAULT_CONSTITUTION)
    assert DEFAULT_CONSTITUTION[0] == Principle(
        "harmful", "Identify specific ways in which the assistant's last response is harmful, unethical, dangerous, "
                   "or illegal.",
        "Please rewrite the assistant response to remove any and all harmful, unethical, dangerous, or illegal "
        "content.")


@pytest.mark.parametrize("name, text", [
    ("c.txt", CONSTITUTION_TXT),
    ("c.jsonl", '{"name": "kind", "critique": "Is the answer unkind?", "revision": "Rewrite it kindly."}\n\n'
                '{"critique": " Is the answer wrong?", "revision": "Rewrite it correctly. "}\n'),
    ("c.yaml", "# two principles\n- name: kind\n  critique: Is the answer unkind?\n  revision: Rewrite it kindly.\n"
               "- critique: Is the answer wrong?\n  revision: >-\n    Rewrite it\n    correctly.\n"),
])
def test_a_constitution_file_in_each_format(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert read_constitution(path) == (KIND, CORRECT)


@pytest.mark.parametrize("name, text, problem", [
    ("c.txt", "critique: a\nrevisoin: b\n", "line 2: expected 'critique: ...', 'revision: ...' or 'name: ...', "
                                            "got 'revisoin: b'"),
    ("c.txt", "# x\nrevision: b\ncritique: a\n", "line 2: 'revision:' before the pair's 'critique:'"),
    ("c.txt", "critique: a\n\ncritique: c\nrevision: d\n", "line 1: field 'revision' must be a non-empty text, got "
                                                           "nothing"),
    ("c.txt", "critique: a\ncritique: b\n", "line 2: a second 'critique:' in one pair (separate pairs with a blank "
                                            "line)"),
    ("c.txt", "name: x\ncritique: a\nrevision: b\n\nname: x\ncritique: c\nrevision: d\n",
     "line 5: the name 'x' is already used on line 1"),
    ("c.txt", "# only a comment\n\n", ": no critique/revision pairs"),
    ("c.jsonl", '{"critique": "a", "revision": "b"}\n{"critique": "a", "revision": \n',
     "line 2: not valid JSON (Expecting value at column 31)"),
    ("c.jsonl", '{"critique": "a", "revision": "b", "principle": "x"}\n',
     "line 1: unknown field 'principle' (a pair has critique, revision and an optional name)"),
    ("c.jsonl", '["a", "b"]\n', "line 1: expected an object with critique and revision, got list"),
    ("c.jsonl", '{"critique": "a", "revision": 3}\n', "line 1: field 'revision' must be a non-empty text, got int 3"),
    ("c.yaml", "- critique: a\n  revision: b\n- critique: c\n", "line 3: field 'revision' must be a non-empty text, "
                                                               "got nothing"),
    ("c.yaml", "critique: a\nrevision: b\n", "line 1: expected a list of pairs (- critique: ... revision: ...)"),
    ("c.yml", "- critique: a\n  revision: [b\n", "line 3: not valid YAML"),
])
def test_a_bad_constitution_names_the_file_and_line(tmp_path, name, text, problem):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError) as error:
        read_constitution(path)
    assert str(error.value).startswith(f"{path}{'' if problem.startswith(':') else ' '}{problem}")


def test_a_missing_constitution_file(tmp_path):
    with pytest.raises(DataError, match=r"constitution file .*nope.txt does not exist"):
        read_constitution(tmp_path / "nope.txt")


# ------------------------------------------------------------------------------------------------ cleaning, config


@pytest.mark.parametrize("step, raw, clean", [
    ("revision", "Revision: Boil it for nine minutes.<|im_end|>\n<|im_start|>user\nmore", "Boil it for nine minutes."),
    ("revision", "  **Revised response:** Be kind.", "Be kind."),
    ("revision", "Rewritten response - Be kind.</s>", "Be kind."),
    ("revision", "Revisions are hard: keep going.", "Revisions are hard: keep going."),  # not a label
    ("revision", "Critique: fine.", "Critique: fine."),  # another step's label stays
    ("critique", "<|im_start|>assistant\nCritique: It is rude.<|im_end|>", "It is rude."),
    ("critique", "<|start_header_id|>assistant<|end_header_id|>\n\nIt is rude.<|eot_id|>x", "It is rude."),
    ("response", "Assistant: Hello there.<|endoftext|>", "Hello there."),
    ("response", "Answer: 42", "Answer: 42"),
])
def test_clean_reply(step, raw, clean):
    assert clean_reply(raw, step) == clean


def test_clean_reply_uses_the_models_own_markers():
    assert clean_reply("<bos>Fine.<my_eos>rest", "revision", end_markers=["<my_eos>"], special_tokens=["<bos>"]) \
        == "Fine."


@pytest.mark.parametrize("override, problem", [
    ("top_p=0", "top_p: must be in (0, 1], got 0.0"), ("top_p=1.5", "top_p: must be in (0, 1], got 1.5"),
    ("temperature=-1", "temperature: must be >= 0, got -1.0"), ("rounds=0", "rounds: must be > 0, got 0"),
])
def test_config_bounds(override, problem):
    with pytest.raises(ConfigError) as error:
        load_config(CAIReviseConfig, None, [override])
    assert str(error.value) == problem
