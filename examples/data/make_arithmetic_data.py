"""Generate the data of the built-in "arithmetic" task (``tether.tasks.arithmetic``).

    python examples/data/make_arithmetic_data.py [--seed 0] [--out DIR]

Grade-school arithmetic word problems with an integer answer, checked by
``tether.rollout.verifiers.check_math``. Ten story templates (shopping, baking, stickers, money,
reading; factory, bus; garden, savings, market), each written at three levels:

  level 1  one addition or subtraction on small numbers          (a+b, a-b)
  level 2  one multiplication, or a division that comes out whole  (a*b, a/b)
  level 3  two operations                                         (a+b-c, a-b+c, a-b-c, a*b-c, a*b+c, a-b*c)

The levels are set by what SmolLM2-135M-Instruct can do (measured; see ``tether.tasks.arithmetic``):
two-operation problems are already hard for it, so level 1 is a single addition or subtraction.

The splits are disjoint BY TEMPLATE (five templates train, two eval, three test: no story is in
two splits) and BY NUMBERS: the numbers of each form (every tuple in the form's ranges with an
allowed answer) are shuffled and cut into one part per split, so the same computation on the same
numbers, e.g. ("a*b-c", (4, 6, 5)), is never in two splits, whatever the story (asserted below).
Within a template and level no numbers repeat. Every prompt states its numbers as digits in the
order of the form's letters and ends with the instruction ``SUFFIX``.

  arithmetic_prompts.jsonl          {"prompt", "answer", "level", "template"}: train (the RL prompts)
  arithmetic_eval.jsonl             the same: held-out prompts (PPO's held-out gold evaluation)
  arithmetic_test.jsonl             the same: the final evaluation
  arithmetic_sft.jsonl              {"prompt", "completion"}: a short worked solution per train prompt,
                                    ending "The answer is N."
  arithmetic_preferences.jsonl      {"prompt", "chosen", "rejected"}: one pair per train prompt; chosen is the
                                    correct worked solution, rejected the same solution with a plausible slip
                                    in its last step (off by 1, 2 or 10, or another operation), so the two
                                    differ only in the final numbers
  arithmetic_preferences_eval.jsonl the same, one per eval prompt: the reward model's held-out report

``answer`` is the integer answer as a string. The eval and test files interleave templates and levels
(any prefix spans them). Deterministic for a seed: the files are byte for byte the same on every run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
ASSETS = HERE.parent.parent / "src" / "tether" / "assets" / "data"
# the instruction every prompt ends with: of the phrasings measured on SmolLM2-135M-Instruct, the one it answered
# best (see tether.tasks.arithmetic), and it makes the model state its final number after "The answer is"
SUFFIX = "Give the final answer after 'The answer is'."
SPLITS = ("train", "eval", "test")
# prompts per (template, level) in each split: train 5 x 3 x 27 = 405, eval 2 x 3 x 17 = 102, test 3 x 3 x 23 = 207
PER_CELL = {"train": 27, "eval": 17, "test": 23}

NAMES = ["Maya", "Leo", "Aisha", "Tom", "Nina", "Omar", "Sara", "Ben", "Lucia", "Ravi", "Emma", "Kenji", "Zoe",
         "Diego", "Hana", "Sam", "Priya", "Jonas", "Mia", "Felix", "Amara", "Noah", "Ines", "Yusuf"]

# The arithmetic forms, each with the numbers it is drawn from (a range per letter a, b, c in order) and the
# answers allowed: the answer and the intermediate value a worked solution names (``s1``), or None when a division
# does not come out whole. Every template that uses a form draws from the same numbers.


def _whole(top: int, bottom: int) -> int | None:
    return top // bottom if bottom and top % bottom == 0 else None


FORMS = {
    "a+b": (lambda a, b: {"ans": a + b}, [(2, 15), (2, 9)], (2, 30)),
    "a-b": (lambda a, b: {"ans": a - b}, [(4, 20), (1, 9)], (1, 30)),
    "a*b": (lambda a, b: {"ans": a * b}, [(2, 12), (2, 9)], (4, 108)),
    "a/b": (lambda a, b: {"ans": _whole(a, b)}, [(4, 84), (2, 7)], (2, 12)),
    "a+b-c": (lambda a, b, c: {"s1": a + b, "ans": a + b - c}, [(2, 15), (2, 9), (1, 9)], (1, 30)),
    "a-b+c": (lambda a, b, c: {"s1": a - b, "ans": a - b + c}, [(4, 20), (1, 9), (1, 9)], (1, 30)),
    "a-b-c": (lambda a, b, c: {"s1": a - b, "ans": a - b - c}, [(8, 25), (1, 9), (1, 9)], (1, 30)),
    "a*b-c": (lambda a, b, c: {"s1": a * b, "ans": a * b - c}, [(2, 6), (2, 6), (1, 9)], (1, 40)),
    "a*b+c": (lambda a, b, c: {"s1": a * b, "ans": a * b + c}, [(2, 6), (2, 6), (1, 9)], (1, 45)),
    "a-b*c": (lambda a, b, c: {"s1": b * c, "ans": a - b * c}, [(10, 30), (2, 5), (2, 5)], (1, 30)),
}

# The last step done with another operation: the wrong final number a rejected solution may give.
WRONG_OP = {
    "a+b": lambda a, b: a - b, "a-b": lambda a, b: a + b, "a*b": lambda a, b: a + b, "a/b": lambda a, b: a - b,
    "a+b-c": lambda a, b, c: a + b + c, "a-b+c": lambda a, b, c: a - b - c, "a-b-c": lambda a, b, c: a - b + c,
    "a*b-c": lambda a, b, c: a * b + c, "a*b+c": lambda a, b, c: a * b - c, "a-b*c": lambda a, b, c: a + b * c,
}

# Each template: its split and, per level, (form, prompt, solution). A prompt states the numbers as digits in the
# order of the form's letters and no other digit ({n} is a name); a solution uses {s1} and the answer {ans}.
TEMPLATES = {
    "shopping": ("train", {
        1: ("a+b", "{n} has {a} pencils and buys {b} more pencils. How many pencils does {n} have now?",
            "{n} has {a} + {b} = {ans} pencils now."),
        2: ("a*b", "{n} buys {a} packs of pencils with {b} pencils in each pack. How many pencils does {n} buy?",
            "{n} buys {a} * {b} = {ans} pencils."),
        3: ("a*b-c", "{n} buys {a} packs of pencils with {b} pencils in each pack and gives {c} pencils to a "
                     "friend. How many pencils does {n} have left?",
            "{n} buys {a} * {b} = {s1} pencils. After giving {c} away, {n} has {s1} - {c} = {ans} pencils left."),
    }),
    "baking": ("train", {
        1: ("a-b", "{n} bakes {a} cookies and eats {b} of them. How many cookies are left?",
            "{a} - {b} = {ans} cookies are left."),
        2: ("a/b", "{n} bakes {a} cookies and shares them equally among {b} children. How many cookies does each "
                   "child get?",
            "Each child gets {a} / {b} = {ans} cookies."),
        3: ("a-b-c", "{n} bakes {a} cookies, gives {b} cookies to a neighbour and eats {c} cookies. How many "
                     "cookies are left?",
            "After giving {b} away, {a} - {b} = {s1} cookies are left. After eating {c}, {s1} - {c} = {ans} "
            "cookies are left."),
    }),
    "stickers": ("train", {
        1: ("a+b", "{n} has {a} stickers and gets {b} more stickers from a friend. How many stickers does {n} "
                   "have now?",
            "{n} has {a} + {b} = {ans} stickers now."),
        2: ("a*b", "{n} buys {a} sheets of stickers with {b} stickers on each sheet. How many stickers does {n} "
                   "buy?",
            "{n} buys {a} * {b} = {ans} stickers."),
        3: ("a+b-c", "{n} has {a} stickers, gets {b} more from a friend and gives {c} stickers to a sister. How "
                     "many stickers does {n} have now?",
            "{n} has {a} + {b} = {s1} stickers. After giving {c} away, {n} has {s1} - {c} = {ans} stickers."),
    }),
    "money": ("train", {
        1: ("a-b", "{n} has ${a} and spends ${b} on a book. How many dollars does {n} have left?",
            "{n} has {a} - {b} = {ans} dollars left."),
        2: ("a*b", "{n} buys {a} notebooks that cost ${b} each. How many dollars does {n} pay?",
            "{n} pays {a} * {b} = {ans} dollars."),
        3: ("a-b*c", "{n} has ${a} and buys {b} notebooks that cost ${c} each. How many dollars does {n} have "
                     "left?",
            "The notebooks cost {b} * {c} = {s1} dollars. {n} has {a} - {s1} = {ans} dollars left."),
    }),
    "reading": ("train", {
        1: ("a-b", "A story has {a} pages. {n} has read {b} pages. How many pages are left to read?",
            "{a} - {b} = {ans} pages are left."),
        2: ("a/b", "{n} reads a story of {a} pages in {b} days, the same number of pages every day. How many "
                   "pages does {n} read each day?",
            "{n} reads {a} / {b} = {ans} pages each day."),
        3: ("a*b+c", "{n} reads {a} pages every day for {b} days and then {c} more pages. How many pages does {n} "
                     "read in all?",
            "{n} reads {a} * {b} = {s1} pages and then {s1} + {c} = {ans} pages in all."),
    }),
    "factory": ("eval", {
        1: ("a+b", "A box has {a} toys. A machine puts {b} more toys in the box. How many toys are in the box now?",
            "The box has {a} + {b} = {ans} toys now."),
        2: ("a*b", "A machine makes {a} toys every hour. How many toys does it make in {b} hours?",
            "It makes {a} * {b} = {ans} toys."),
        3: ("a*b-c", "A machine makes {a} toys every hour for {b} hours. {c} of the toys are broken. How many toys "
                     "are not broken?",
            "It makes {a} * {b} = {s1} toys. Without the broken ones, {s1} - {c} = {ans} toys are not broken."),
    }),
    "bus": ("eval", {
        1: ("a-b", "A bus has {a} passengers. At the first stop {b} passengers get off. How many passengers are "
                   "on the bus now?",
            "{a} - {b} = {ans} passengers are on the bus."),
        2: ("a*b", "A bus makes {a} trips with {b} children on each trip. How many children ride the bus?",
            "{a} * {b} = {ans} children ride the bus."),
        3: ("a-b+c", "A bus has {a} passengers. At the first stop {b} passengers get off and {c} get on. How many "
                     "passengers are on the bus now?",
            "After {b} get off, {a} - {b} = {s1} are left. After {c} get on, {s1} + {c} = {ans} are on the bus."),
    }),
    "garden": ("test", {
        1: ("a+b", "{n} has {a} flowers in the garden and plants {b} more. How many flowers are in the garden now?",
            "There are {a} + {b} = {ans} flowers in the garden now."),
        2: ("a*b", "{n} plants {a} rows of flowers with {b} flowers in each row. How many flowers does {n} plant?",
            "{n} plants {a} * {b} = {ans} flowers."),
        3: ("a*b-c", "{n} plants {a} rows of flowers with {b} flowers in each row. Rabbits eat {c} of the flowers. "
                     "How many flowers are left?",
            "{n} plants {a} * {b} = {s1} flowers. After the rabbits, {s1} - {c} = {ans} flowers are left."),
    }),
    "savings": ("test", {
        1: ("a-b", "{n} has {a} dollars and spends {b} dollars on a game. How many dollars does {n} have left?",
            "{n} has {a} - {b} = {ans} dollars left."),
        2: ("a*b", "{n} saves {a} dollars every week. How many dollars does {n} save in {b} weeks?",
            "{n} saves {a} * {b} = {ans} dollars."),
        3: ("a+b-c", "{n} has {a} dollars, earns {b} dollars more and spends {c} dollars on a game. How many "
                     "dollars does {n} have now?",
            "{n} has {a} + {b} = {s1} dollars. After the game, {n} has {s1} - {c} = {ans} dollars."),
    }),
    "market": ("test", {
        1: ("a+b", "A farmer has {a} apples and picks {b} more. How many apples does the farmer have now?",
            "The farmer has {a} + {b} = {ans} apples now."),
        2: ("a/b", "A farmer packs {a} apples equally into {b} boxes. How many apples are in each box?",
            "Each box has {a} / {b} = {ans} apples."),
        3: ("a-b-c", "A farmer has {a} apples, sells {b} apples to one shop and {c} apples to another. How many "
                     "apples are left?",
            "After the first shop, {a} - {b} = {s1} apples are left. After the second, {s1} - {c} = {ans} "
            "apples are left."),
    }),
}

LETTERS = "abc"


def answer_of(form: str, numbers: tuple[int, ...]) -> dict | None:
    """The form's intermediate value and answer for these numbers; None unless both are whole numbers above 0 and
    the answer is in the form's allowed range."""
    compute, _, (smallest, largest) = FORMS[form]
    values = compute(*numbers)
    if any(v is None or v <= 0 for v in values.values()) or not smallest <= values["ans"] <= largest:
        return None
    return values


def number_parts(seed: int) -> dict[tuple[str, str], list[tuple[int, ...]]]:
    """(form, split) -> the numbers that split may use with that form: every valid tuple of the form's ranges,
    shuffled and cut into one part per split that uses the form, sized by the split's prompts per template and
    level (so no tuple is in two splits)."""
    rng = random.Random(seed)
    parts = {}
    for form, (_, ranges, _) in FORMS.items():
        valid = [t for t in itertools.product(*(range(lo, hi + 1) for lo, hi in ranges)) if answer_of(form, t)]
        rng.shuffle(valid)
        users = [s for s in SPLITS if any(home == s and form in {f for f, _, _ in levels.values()}
                                          for home, levels in TEMPLATES.values())]
        total, start = sum(PER_CELL[s] for s in users), 0
        for k, split in enumerate(users):
            end = len(valid) if k == len(users) - 1 else start + round(len(valid) * PER_CELL[split] / total)
            parts[(form, split)] = valid[start:end]
            assert len(parts[(form, split)]) >= PER_CELL[split], f"too few numbers for {form} in {split}"
            start = end
    return parts


def build(seed: int) -> dict[str, list[dict]]:
    """The problems of each split: train shuffled, eval and test interleaved by template and level. Within a
    template and level no numbers repeat; across splits no (form, numbers) repeats."""
    parts = number_parts(seed)
    rng = random.Random(seed)
    problems = {}
    for split in SPLITS:
        cells = []
        for template, (home, levels) in TEMPLATES.items():
            if home != split:
                continue
            for level, (form, prompt, solution) in levels.items():
                cell = []
                for numbers in rng.sample(parts[(form, split)], PER_CELL[split]):
                    values = answer_of(form, numbers)
                    fill = {"n": rng.choice(NAMES), **dict(zip(LETTERS, numbers)), **values}
                    cell.append({"prompt": f"{prompt.format(**fill)} {SUFFIX}", "answer": str(values["ans"]),
                                 "level": level, "template": template, "form": form, "numbers": numbers,
                                 "fill": fill, "solution": solution})
                cells.append(cell)
        if split == "train":
            rows = [row for cell in cells for row in cell]
            rng.shuffle(rows)
        else:
            rows = [row for group in itertools.zip_longest(*cells) for row in group if row is not None]
        problems[split] = rows
    return problems


def worked(problem: dict, final: int | None = None) -> str:
    """The worked solution, ending "The answer is N."; ``final`` replaces the last step's result (a slip)."""
    fill = dict(problem["fill"])
    if final is not None:
        fill["ans"] = final
    return f"{problem['solution'].format(**fill)} The answer is {fill['ans']}."


def slip(problem: dict, rng: random.Random) -> int:
    """A plausible wrong final number: off by 1, 2 or 10, or the last step done with another operation."""
    answer = int(problem["answer"])
    other = WRONG_OP[problem["form"]](*problem["numbers"])
    candidates = [c for c in (answer - 10, answer - 2, answer - 1, answer + 1, answer + 2, answer + 10) if c > 0]
    return other if other > 0 and other != answer and rng.random() < 0.4 else rng.choice(candidates)


def check(problems: dict[str, list[dict]]) -> None:
    """The splits are disjoint by template, by (form, numbers) and by prompt; no numbers repeat within a template
    and level; every answer is a positive integer and ends its worked solution."""
    for a, b in itertools.combinations(SPLITS, 2):
        assert not {p["template"] for p in problems[a]} & {p["template"] for p in problems[b]}, (a, b)
        assert not {(p["form"], p["numbers"]) for p in problems[a]} & {(p["form"], p["numbers"]) for p in problems[b]}
    prompts = [p["prompt"] for rows in problems.values() for p in rows]
    assert len(prompts) == len(set(prompts)), "a prompt is repeated"
    cells = [(p["template"], p["level"], p["numbers"]) for rows in problems.values() for p in rows]
    assert len(cells) == len(set(cells)), "numbers repeat within a template and level"
    for rows in problems.values():
        for p in rows:
            assert int(p["answer"]) > 0 and str(int(p["answer"])) == p["answer"], p
            assert f"The answer is {p['answer']}." in worked(p), p


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def public(problem: dict) -> dict:
    return {k: problem[k] for k in ("prompt", "answer", "level", "template")}


def generate(out: Path, seed: int = 0) -> dict[str, list[dict]]:
    """Write every file of the task into ``out``; returns the problems of each split."""
    problems = build(seed)
    check(problems)
    rng = random.Random(seed + 1)
    pairs = {split: [{"prompt": p["prompt"], "chosen": worked(p), "rejected": worked(p, slip(p, rng))}
                     for p in problems[split]] for split in ("train", "eval")}
    rng.shuffle(pairs["train"])
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "arithmetic_prompts.jsonl", [public(p) for p in problems["train"]])
    write_jsonl(out / "arithmetic_eval.jsonl", [public(p) for p in problems["eval"]])
    write_jsonl(out / "arithmetic_test.jsonl", [public(p) for p in problems["test"]])
    write_jsonl(out / "arithmetic_sft.jsonl", [{"prompt": p["prompt"], "completion": worked(p)}
                                               for p in problems["train"]])
    write_jsonl(out / "arithmetic_preferences.jsonl", pairs["train"])
    write_jsonl(out / "arithmetic_preferences_eval.jsonl", pairs["eval"])
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ASSETS, help="output folder (default: the package's assets/data)")
    args = parser.parse_args(argv)
    problems = generate(args.out, args.seed)
    for split in SPLITS:
        rows = problems[split]
        levels = {k: sum(p["level"] == k for p in rows) for k in (1, 2, 3)}
        templates = sorted({p["template"] for p in rows})
        print(f"{split}: {len(rows)} prompts, levels {levels}, templates {', '.join(templates)}")


if __name__ == "__main__":
    main()
