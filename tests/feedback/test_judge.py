import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tether.feedback.judge import EndpointJudge, LocalJudge, judge_pair, judge_pairs, position_bias_rate


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


def test_local_judge_reads_the_a_b_logits(tokenizer):
    from tests.helpers import tiny_model_config
    from tether.models.loading import load_causal_lm

    model = load_causal_lm(tiny_model_config(), seed=0)
    judge = LocalJudge(model, tokenizer)
    winner, probability = judge.prefer_first("q", "a", "b", "p")
    assert winner in (0, 1) and 0.5 <= probability <= 1.0


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
