import json

import pytest

from tests.helpers import EXAMPLES
from tether.tasks.helpful import gold_components, gold_utility


def test_gold_utility_components_by_hand():
    prompt = "How do I keep basil healthy indoors?"
    good = "Give basil plenty of light, check the soil and water it when the top is dry."
    parts = gold_components(prompt, good)
    # content words of the prompt: basil, healthy, indoors → the answer uses 1 of 3
    assert parts["on_topic"] == pytest.approx(2.0 / 3)
    assert parts["actionable"] == 1.0  # give, check, water
    assert parts["polite"] == parts["hedging"] == parts["refusal"] == parts["repetition"] == 0.0
    rude = "Whatever, figure it out yourself."
    assert gold_components(prompt, rude)["polite"] == -2.0
    # whole words only: "ugh" is not in "through", "enough" or "though"; "Ugh" itself counts, once per occurrence
    polite = "Go through the leaves; enough light is fine, though."
    assert gold_components(prompt, polite)["polite"] == 0.0
    assert gold_components(prompt, "Ugh. Fine.")["polite"] == -1.0
    assert gold_components(prompt, "Ugh, ugh, ugh.")["polite"] == -2.0  # up to 2
    looped = "basil is good. basil is good. basil is good."
    assert gold_components(prompt, looped)["repetition"] == pytest.approx(-2.0 * (1 - 3 / 7))
    assert gold_utility(prompt, good) > gold_utility(prompt, rude)


def test_gold_utility_agrees_with_the_constructed_preferences():
    rows = [json.loads(line) for line in (EXAMPLES / "data" / "preferences_eval.jsonl").read_text().splitlines()]
    agree = sum(gold_utility(r["prompt"], r["chosen"]) > gold_utility(r["prompt"], r["rejected"]) for r in rows)
    assert agree / len(rows) >= 0.9


def test_task_prompt_splits_are_disjoint():
    from tether.tasks.helpful import task_prompts

    train, held, test = (set(task_prompts(s)) for s in ("train", "eval", "test"))
    assert (len(train), len(held), len(test)) == (354, 96, 30)
    assert not (train & held) and not (train & test) and not (held & test)
    with pytest.raises(ValueError, match="train, eval, test"):
        task_prompts("dev")


def test_held_out_evaluator_is_nearly_always_right():
    from tether.feedback.simulate import Comparison, gold_choice, held_out_evaluator, simulate_labels

    rows = [json.loads(line) for line in (EXAMPLES / "data" / "preferences_eval.jsonl").read_text().splitlines()]
    comps = [Comparison(f"i{k}", r["prompt"], r["chosen"], r["rejected"]) for k, r in enumerate(rows)]
    labels = simulate_labels(comps, [held_out_evaluator()], 1, gold_utility, seed=0)
    truth = {c.item: gold_choice(c, gold_utility) for c in comps}
    assert sum(lab.choice == truth[lab.item] for lab in labels) / len(labels) >= 0.95
