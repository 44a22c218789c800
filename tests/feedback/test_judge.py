import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from tether.feedback.judge import RUBRIC, EndpointJudge, LocalJudge, judge_pair, judge_pairs, position_bias_rate


class FirstSlotJudge:
    """Always prefers whatever is shown first: pure position bias."""

    def prefer_first(self, prompt, a, b, principle):
        return 0, 0.9


class LengthJudge:
    """Consistent: prefers the longer answer wherever it is shown."""

    def prefer_first(self, prompt, a, b, principle):
        return (0 if len(a) >= len(b) else 1), 0.8


def test_both_orders_expose_position_bias():
    verdict = judge_pair(FirstSlotJudge(), "q", "short", "a longer answer", "p")
    assert verdict.choice is None and verdict.first_order == 0 and verdict.swapped_order == 1
    consistent = judge_pair(LengthJudge(), "q", "short", "a longer answer", "p")
    assert consistent.choice == 1 and consistent.confidence == pytest.approx(0.8)
    triples = [("q", "x", "yy"), ("q", "zzz", "w")]
    assert position_bias_rate(judge_pairs(FirstSlotJudge(), triples)) == 1.0
    assert position_bias_rate(judge_pairs(LengthJudge(), triples)) == 0.0


def test_a_principle_is_drawn_from_the_constitution():
    verdicts = judge_pairs(LengthJudge(), [("q", "a", "bb")] * 20, constitution=["one", "two"], seed=1)
    assert {v.principle for v in verdicts} == {"one", "two"}


def test_openai_compatible_endpoint_round_trip():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body, self.headers.get("Authorization")))
            reply = {"choices": [{"message": {"role": "assistant", "content": " B."}}]}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        judge = EndpointJudge(f"http://127.0.0.1:{server.server_port}/v1", "judge-model", api_key="k")
        verdict = judge_pair(judge, "How?", "first", "second", "Be helpful.")
    finally:
        server.shutdown()
    # "B" both times: second slot wins in each order → inconsistent → a tie
    assert verdict.choice is None and len(seen) == 2
    path, body, auth = seen[0]
    assert path == "/v1/chat/completions" and body["model"] == "judge-model" and auth == "Bearer k"
    assert "Principle: Be helpful." in body["messages"][0]["content"]


# (prompt, first answer, second answer, principle): answers of different lengths and content, so that swapping
# them moves the tiny model's last-position logits by far more than the comparison's tolerance
JUDGED = [
    ("How do I boil an egg?", "Put it in boiling water for nine minutes, then cool it in cold water.", "No.",
     "Choose the response that gives concrete, practical advice."),
    ("Name a colour.", "Blue.", "I cannot answer questions about colours, or about anything else at all, sorry!",
     "Choose the response that is clear and concise, without needless repetition."),
    ("Is the sea salty?", "Yes: about 3.5% of sea water is dissolved salt.", "Maybe, who knows.",
     "Choose the response that is honest and does not hide behind empty hedging."),
]


def _reference_first_wins(model, tokenizer, prompt, first, second, principle) -> float:
    """P(the first answer wins) computed without the judge: the rubric with the first answer as A, the user turn
    rendered and tokenised by the tokenizer's own chat template (raw text without one), one plain forward, and
    P(A | A or B) = σ(logit_A − logit_B) at the last position, which predicts the reply's first token."""
    text = RUBRIC.format(principle=principle, prompt=prompt, a=first, b=second)
    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]
    else:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    letter_a, letter_b = tokenizer.convert_tokens_to_ids("A"), tokenizer.convert_tokens_to_ids("B")
    assert tokenizer.decode([letter_a]) == "A" and tokenizer.decode([letter_b]) == "B"
    with torch.no_grad():
        last = model(input_ids=torch.tensor([ids])).logits[0, -1].double()
    return float(torch.sigmoid(last[letter_a] - last[letter_b]))


@pytest.mark.parametrize("template", ["chat template", "plain text"])
def test_local_judge_probability_matches_an_independent_reference(tokenizer, template):
    """The judge's (winner, probability) is argmax / max of P(A | A or B) at the prompt's last position, to 1e-5.

    Caught: reading another token's logit (e.g. " A" or swapping A and B), a softmax over the whole vocabulary
    instead of the two letters, the answers put in the rubric the other way round, a position other than the
    last, a prompt without the chat template's generation prompt, and returning the losing letter's probability.
    """
    import copy

    from tests.helpers import tiny_model_config
    from tether.models.loading import load_causal_lm

    if template == "plain text":
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.chat_template = None
    model = load_causal_lm(tiny_model_config(), seed=0)
    judge = LocalJudge(model, tokenizer)
    references = []
    for prompt, first, second, principle in JUDGED:
        for a, b in ((first, second), (second, first)):
            expected = _reference_first_wins(model, tokenizer, prompt, a, b, principle)
            winner, probability = judge.prefer_first(prompt, a, b, principle)
            assert winner == (0 if expected > 0.5 else 1)
            assert probability == pytest.approx(max(expected, 1 - expected), abs=1e-5)
            references.append(expected)
    # the comparison can tell the mutations apart: with a random tiny model P(A) stays near 0.5, so check that it
    # moves, between inputs and when the two answers trade places, by far more than the 1e-5 tolerance
    swap_shifts = [abs(references[i] - references[i + 1]) for i in range(0, len(references), 2)]
    assert max(swap_shifts) > 1e-4 and max(references) - min(references) > 1e-4
    assert all(abs(p - 0.5) > 1e-3 for p in references)  # the winner is never a coin toss at the tolerance


@pytest.mark.slow
def test_embedded_judge_on_50_pairs_of_the_built_in_task(tmp_path):
    import json as _json

    from tests.helpers import EXAMPLES
    from tether.config import LabelJudgeConfig
    from tether.recipes.label import run_label_judge

    rows = [_json.loads(line) for line in (EXAMPLES / "data" / "preferences_eval.jsonl").read_text().splitlines()][:50]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(_json.dumps({"prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]]}) + "\n"
                               for r in rows))
    summary = run_label_judge(LabelJudgeConfig(samples=str(samples), db=str(tmp_path / "l.sqlite")))
    assert summary["comparisons"] == 50 and 0.0 <= summary["position_bias_rate"] <= 1.0
    assert summary["gold_agreement_single_order"] is not None
