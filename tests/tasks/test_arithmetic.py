"""The arithmetic task: its packaged data regenerates byte for byte, its splits share no template and no
computation, every answer is right (re-derived here from the prompt's numbers), and its gold is check_math
against the packaged answer."""

import filecmp
import importlib.util
import itertools
import json
import re

import pytest

from tests.helpers import EXAMPLES, ROOT
from tether.tasks.arithmetic import answer_of, gold_reward, gold_utility, task_prompts
from tether.tasks.registry import get_task

DATA = ROOT / "src" / "tether" / "assets" / "data"
GENERATOR = EXAMPLES / "data" / "make_arithmetic_data.py"
FILES = ("arithmetic_prompts.jsonl", "arithmetic_eval.jsonl", "arithmetic_test.jsonl", "arithmetic_sft.jsonl",
         "arithmetic_preferences.jsonl", "arithmetic_preferences_eval.jsonl")
SPLIT_FILES = {"train": "arithmetic_prompts.jsonl", "eval": "arithmetic_eval.jsonl", "test": "arithmetic_test.jsonl"}

# (template, level) -> (the computation's name, the answer from the prompt's numbers in order); written here
# independently of the generator
FORMULAS = {
    ("shopping", 1): ("a+b", lambda a, b: a + b),
    ("shopping", 2): ("a*b", lambda a, b: a * b),
    ("shopping", 3): ("a*b-c", lambda a, b, c: a * b - c),
    ("baking", 1): ("a-b", lambda a, b: a - b),
    ("baking", 2): ("a/b", lambda a, b: a / b),
    ("baking", 3): ("a-b-c", lambda a, b, c: a - b - c),
    ("stickers", 1): ("a+b", lambda a, b: a + b),
    ("stickers", 2): ("a*b", lambda a, b: a * b),
    ("stickers", 3): ("a+b-c", lambda a, b, c: a + b - c),
    ("money", 1): ("a-b", lambda a, b: a - b),
    ("money", 2): ("a*b", lambda a, b: a * b),
    ("money", 3): ("a-b*c", lambda a, b, c: a - b * c),
    ("reading", 1): ("a-b", lambda a, b: a - b),
    ("reading", 2): ("a/b", lambda a, b: a / b),
    ("reading", 3): ("a*b+c", lambda a, b, c: a * b + c),
    ("factory", 1): ("a+b", lambda a, b: a + b),
    ("factory", 2): ("a*b", lambda a, b: a * b),
    ("factory", 3): ("a*b-c", lambda a, b, c: a * b - c),
    ("bus", 1): ("a-b", lambda a, b: a - b),
    ("bus", 2): ("a*b", lambda a, b: a * b),
    ("bus", 3): ("a-b+c", lambda a, b, c: a - b + c),
    ("garden", 1): ("a+b", lambda a, b: a + b),
    ("garden", 2): ("a*b", lambda a, b: a * b),
    ("garden", 3): ("a*b-c", lambda a, b, c: a * b - c),
    ("savings", 1): ("a-b", lambda a, b: a - b),
    ("savings", 2): ("a*b", lambda a, b: a * b),
    ("savings", 3): ("a+b-c", lambda a, b, c: a + b - c),
    ("market", 1): ("a+b", lambda a, b: a + b),
    ("market", 2): ("a/b", lambda a, b: a / b),
    ("market", 3): ("a-b-c", lambda a, b, c: a - b - c),
}


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line]


def numbers(prompt: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", prompt))


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("make_arithmetic_data", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_reproduces_the_packaged_files(generator, tmp_path):
    generator.main(["--out", str(tmp_path)])
    for name in FILES:
        assert filecmp.cmp(tmp_path / name, DATA / name, shallow=False), name


def test_rows_sizes_and_levels():
    sizes = {"train": 405, "eval": 102, "test": 207}
    for split, name in SPLIT_FILES.items():
        data = rows(name)
        assert len(data) == sizes[split] == len(task_prompts(split))
        assert [r["prompt"] for r in data] == list(task_prompts(split))
        for row in data:
            assert set(row) == {"prompt", "answer", "level", "template"}
            assert row["answer"] == str(int(row["answer"])) and int(row["answer"]) > 0
            assert row["prompt"].endswith(" Give the final answer after 'The answer is'.")
        assert {k: sum(r["level"] == k for r in data) for k in (1, 2, 3)} == {k: sizes[split] // 3 for k in (1, 2, 3)}
    # the held-out files interleave templates and levels: any prefix spans them
    for name in ("arithmetic_eval.jsonl", "arithmetic_test.jsonl"):
        head = rows(name)[:9]
        assert {r["level"] for r in head} == {1, 2, 3} and len({r["template"] for r in head}) >= 2
    with pytest.raises(ValueError, match="train, eval, test"):
        task_prompts("dev")


def test_every_answer_is_rederived_from_the_prompts_numbers():
    for name in SPLIT_FILES.values():
        for row in rows(name):
            _, formula = FORMULAS[(row["template"], row["level"])]
            value = formula(*numbers(row["prompt"]))  # also fails when the prompt has a digit too many or few
            assert value == int(row["answer"]), row


@pytest.mark.parametrize("prompt, answer", [
    # worked out by hand
    ("Tom has 5 dollars, earns 5 dollars more and spends 9 dollars on a game. How many dollars does Tom have now?",
     "1"),  # 5 + 5 - 9
    ("A machine makes 4 toys every hour for 3 hours. 7 of the toys are broken. How many toys are not broken?",
     "5"),  # 4 * 3 - 7
    ("Maya reads 2 pages every day for 5 days and then 8 more pages. How many pages does Maya read in all?",
     "18"),  # 2 * 5 + 8
    ("Felix buys 3 packs of pencils with 4 pencils in each pack and gives 6 pencils to a friend. How many pencils "
     "does Felix have left?", "6"),  # 3 * 4 - 6
])
def test_answers_worked_out_by_hand(prompt, answer):
    # these problems are in the packaged files (test, eval, train, train)
    assert answer_of(f"{prompt} Give the final answer after 'The answer is'.") == answer


def test_splits_are_disjoint_by_template_and_by_numbers():
    data = {split: rows(name) for split, name in SPLIT_FILES.items()}
    templates = {split: {r["template"] for r in data[split]} for split in data}
    assert templates == {"train": {"shopping", "baking", "stickers", "money", "reading"}, "eval": {"factory", "bus"},
                         "test": {"garden", "savings", "market"}}
    for a, b in itertools.combinations(data, 2):
        assert not templates[a] & templates[b]
        assert not {r["prompt"] for r in data[a]} & {r["prompt"] for r in data[b]}
        # the same computation on the same numbers is never in two splits, whatever the story
        computed = [{(FORMULAS[(r["template"], r["level"])][0], numbers(r["prompt"])) for r in data[s]} for s in (a, b)]
        assert not computed[0] & computed[1], (a, b)
        assert not {(r["template"], numbers(r["prompt"])) for r in data[a]} & \
            {(r["template"], numbers(r["prompt"])) for r in data[b]}
    # within a template and level no numbers repeat
    cells = [(r["template"], r["level"], numbers(r["prompt"])) for split in data.values() for r in split]
    assert len(cells) == len(set(cells))
    # every test level shares its computations with some train or eval template, told as another story
    seen = {FORMULAS[(r["template"], r["level"])][0] for s in ("train", "eval") for r in data[s]}
    assert {FORMULAS[(r["template"], r["level"])][0] for r in data["test"]} <= seen


def test_sft_and_preference_pairs_are_judged_by_the_gold():
    train = {r["prompt"]: r["answer"] for r in rows("arithmetic_prompts.jsonl")}
    sft = rows("arithmetic_sft.jsonl")
    assert [r["prompt"] for r in sft] == list(train)
    for row in sft:
        assert row["completion"].endswith(f" The answer is {train[row['prompt']]}.")
        assert gold_utility(row["prompt"], row["completion"]) == 1.0
    for name, prompts in (("arithmetic_preferences.jsonl", set(train)),
                          ("arithmetic_preferences_eval.jsonl", set(task_prompts("eval")))):
        pairs = rows(name)
        assert {p["prompt"] for p in pairs} == prompts and len(pairs) == len(prompts)
        assert gold_reward([p["prompt"] for p in pairs], [p["chosen"] for p in pairs]) == [1.0] * len(pairs)
        assert gold_reward([p["prompt"] for p in pairs], [p["rejected"] for p in pairs]) == [0.0] * len(pairs)
        for pair in pairs:  # the rejected one slips in its last step only: same words, other final numbers
            assert re.sub(r"\d+", "#", pair["chosen"]) == re.sub(r"\d+", "#", pair["rejected"])


def test_gold_reward_is_check_math_against_the_packaged_answer():
    prompt = task_prompts("test")[0]
    answer = int(answer_of(prompt))
    responses = [f"The answer is {answer}.", f"6 * 7 = 42, so the answer is {answer + 1}.", "I am not sure.",
                 f"Step one gives {answer}. Then {answer} + 5 = {answer + 5}.", f"\\boxed{{{answer}}}", ""]
    assert gold_reward([prompt] * len(responses), responses) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert gold_utility(f"  {prompt}\n", f"So {answer}.") == 1.0  # the last number; surrounding space is ignored
    for split in ("train", "eval"):
        first = task_prompts(split)[0]
        assert gold_utility(first, f"The answer is {answer_of(first)}.") == 1.0


def test_an_unknown_prompt_is_named():
    with pytest.raises(ValueError, match="no answer for the prompt 'What is 2 \\+ 2\\?'"):
        gold_reward(["What is 2 + 2?"], ["The answer is 4."])
    with pytest.raises(ValueError, match="arithmetic_test.jsonl"):
        gold_utility("Tom has 3 apples.", "3")


def test_the_registered_task():
    task = get_task("arithmetic")
    assert task.chat_template == "auto" and task.noise_scale == 0.25 and task.max_new_tokens == 96
    assert task.path("test_file").endswith("arithmetic_test.jsonl")
    assert task.gold == "tether.tasks.arithmetic:gold_reward"
    assert task.utility == "tether.tasks.arithmetic:gold_utility"
