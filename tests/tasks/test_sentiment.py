import filecmp
import importlib.util
import json
import subprocess
import sys

import pytest

from tests.helpers import EXAMPLES, ROOT
from tether.tasks import sentiment
from tether.tasks.sentiment import gold_reward, gold_utility, task_prompts

DATA = ROOT / "src" / "tether" / "assets" / "data"
GENERATOR = EXAMPLES / "data" / "make_sentiment_data.py"
FILES = ("sentiment_sft.jsonl", "sentiment_prompts.jsonl", "sentiment_eval.jsonl", "sentiment_test.jsonl",
         "sentiment_preferences.jsonl", "sentiment_preferences_eval.jsonl")


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture(scope="module")
def vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return lambda text: analyzer.polarity_scores(text)["compound"]


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("make_sentiment_data", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# VADER 3.3.2's compound scores, looked up once and written in by hand
@pytest.mark.parametrize("text, expected", [
    ("I loved it, wonderful!", 0.8356),
    ("The food was terrible and the service was slow.", -0.4767),
    (" was on the third floor and faced the car park.", 0.0),
    ("This is the best phone I have ever owned.", 0.6369),
    ("I would not recommend it to anyone.", -0.2755),
    ("The staff were friendly and helpful.", 0.7184),
    ("It was not good at all.", -0.3412),
])
def test_gold_is_vader_compound_of_the_continuation(text, expected):
    assert gold_utility("I stayed at this hotel for two nights last month. The room", text) == \
        pytest.approx(expected, abs=1e-4)


def test_gold_of_empty_response_and_independence_from_prompt():
    assert gold_utility("Any opening. The staff", "") == 0.0
    assert gold_utility("Any opening. The staff", "   \n") == 0.0
    response = " were rude and ignored every request."
    assert gold_utility("I loved this wonderful, perfect hotel. The staff", response) == \
        gold_utility("I hated this awful, terrible hotel. The staff", response) == gold_utility("", response)
    assert gold_reward(["a", "b", "c"], ["I loved it, wonderful!", "", " was on the third floor."]) == \
        pytest.approx([0.8356, 0.0, 0.0], abs=1e-4)


def test_missing_vader_names_the_fix(monkeypatch):
    sentiment._analyzer.cache_clear()
    monkeypatch.setitem(sys.modules, "vaderSentiment", None)
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)
    try:
        with pytest.raises(ImportError, match="pip install vaderSentiment"):
            gold_utility("", "I loved it.")
    finally:
        sentiment._analyzer.cache_clear()


def test_splits_are_disjoint_by_prompt_and_by_subject(generator):
    train, held, test = (task_prompts(s) for s in ("train", "eval", "test"))
    assert (len(train), len(held), len(test)) == (320, 80, 160)
    assert len(test) >= 120 and 60 <= len(held) <= 100
    assert not (set(train) & set(held)) and not (set(train) & set(test)) and not (set(held) & set(test))
    with pytest.raises(ValueError, match="train, eval, test"):
        task_prompts("dev")
    # every subject's openings are all in one split (subjects never contain one another, so `in` is exact)
    subjects = [s for spec in generator.CATEGORIES.values() for s in spec["subjects"]]
    assert not any(a != b and a in b for a in subjects for b in subjects)
    splits_of = {s: {name for name, prompts in (("train", train), ("eval", held), ("test", test))
                     if any(s in p for p in prompts)} for s in subjects}
    assert all(len(found) == 1 for found in splits_of.values()), splits_of
    assert all(any(s in p for s in subjects) for p in train + held + test)
    # the test split interleaves the categories: its first ten openings are from ten different categories
    category_of = {s: c for c, spec in generator.CATEGORIES.items() for s in spec["subjects"]}
    first = [next(category_of[s] for s in subjects if s in p) for p in test[:10]]
    assert len(set(first)) == 10


def test_openings_are_neutral_and_end_mid_sentence(vader):
    for prompt in task_prompts("train") + task_prompts("eval") + task_prompts("test"):
        assert abs(vader(prompt)) < 0.05, prompt
        assert 12 <= len(prompt.split()) <= 30, prompt
        assert not prompt.endswith((" ", ".")), prompt


def test_sft_format_and_sentiment_mix(vader):
    sft = rows("sentiment_sft.jsonl")
    assert 400 <= len(sft) <= 600
    assert {r["prompt"] for r in sft} <= set(task_prompts("train"))
    classes = []
    for row in sft:
        response = row["completion"]
        assert response.startswith(" ") and not response.startswith("  "), response
        assert 8 <= len(response.split()) <= 25 and response.endswith("."), response
        assert response.count(". ") <= 1, response  # one or two sentences
        score = vader(response)
        classes.append("pos" if score >= 0.05 else "neg" if score <= -0.05 else "neu")
    for cls in ("pos", "neg", "neu"):
        assert 0.25 <= classes.count(cls) / len(classes) <= 0.42, cls


@pytest.mark.parametrize("name, split, count", [("sentiment_preferences.jsonl", "train", (400, 700)),
                                                ("sentiment_preferences_eval.jsonl", "eval", (160, 160))])
def test_shipped_pairs_prefer_the_more_positive_and_length_is_uninformative(vader, name, split, count):
    pairs = rows(name)
    assert count[0] <= len(pairs) <= count[1]
    assert {p["prompt"] for p in pairs} <= set(task_prompts(split))
    kinds = []
    for pair in pairs:
        chosen, rejected = vader(pair["chosen"]), vader(pair["rejected"])
        assert chosen >= rejected + 0.3, pair
        assert pair["chosen"].startswith(" ") and pair["rejected"].startswith(" ")
        kinds.append("pos" if rejected >= 0.05 else "neg" if chosen <= -0.05 else "across")
    longer_wins = sum(len(p["chosen"]) > len(p["rejected"]) for p in pairs) / len(pairs)
    assert 0.45 <= longer_wins <= 0.55
    # graded pairs, both positive (or both negative) and the chosen more so: a fifth each, so that a reward model
    # learns how positive a continuation is and not only which side of neutral it is on
    for kind in ("pos", "neg"):
        assert 0.17 <= kinds.count(kind) / len(kinds) <= 0.23, (kind, kinds.count(kind))


def test_generator_reproduces_the_packaged_files(tmp_path):
    done = subprocess.run([sys.executable, str(GENERATOR), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    for name in FILES:
        assert filecmp.cmp(tmp_path / name, DATA / name, shallow=False), name
