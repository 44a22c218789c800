"""Generate the small example datasets shipped in examples/data/ (and in the package for the quickstart).

    python examples/data/make_data.py [--seed 0]

Short helpful-assistant requests across ten topics. Each prompt has a good answer
(concrete, polite, on-topic). Preference pairs put a good answer against a defective
one of five kinds, mixed evenly:

  rude        dismissive wording around a fragment of useful content
  hedging     empty "As an AI, it depends" hedging
  off_topic   a good answer to a prompt from another topic
  repetition  a phrase repeated
  refusal     an unhelpful refusal

Chosen is better by construction. Length is made uninformative on purpose: for each
pair a coin decides whether the chosen or the rejected response is the longer one, and
extra sentences of the same kind are added to make it so (the script checks that the
"longer response wins" rule is right on 45-55% of pairs). Deterministic for a seed.

Prompts are split by subject into three disjoint sets, so a held-out prompt is genuinely new:

  training   sft.jsonl, sft_messages.jsonl, preferences.jsonl, rankings.jsonl, kto.jsonl
  RL         prompts.jsonl (the examples' PPO / GRPO / best-of-N prompts)
  held-out   preferences_eval.jsonl (pairs), prompts_eval.jsonl (the same prompts alone, for `tether eval`)
  test       helpful_test.jsonl: 120 prompts on 40 subjects of their own (TEST_SUBJECTS), the quickstart's
             final evaluation
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

TOPICS = {
    "cooking": {
        "subjects": ["rice", "lentils", "scrambled eggs", "roasted vegetables", "a tomato sauce", "oatmeal",
                     "a green salad", "baked potatoes", "chicken soup", "pancakes", "stir-fried tofu", "pasta",
                     "a vegetable curry", "homemade bread", "grilled fish", "a bean chili"],
        "prompts": ["How do I make {s} that turns out well?", "What is a simple way to cook {s}?",
                    "Any tips for preparing {s} on a weeknight?"],
        "good": ["Start with a simple recipe for {s} and measure the ingredients before you begin.",
                 "Cook {s} over medium heat and taste as you go, adding salt a little at a time.",
                 "Check {s} a few minutes before the suggested time so it does not overcook.",
                 "Prepare everything for {s} first, then keep the steps short and focused."],
        "extra": ["A clean pan and a sharp knife make the work easier.",
                  "Write down what you changed so the next batch is even better."],
    },
    "travel": {
        "subjects": ["a weekend in a new city", "a long train journey", "a first trip abroad", "a camping trip",
                     "a budget flight", "a road trip", "a hiking holiday", "a visit to a museum town",
                     "a trip with small children", "a business trip", "a beach holiday", "a trip in winter",
                     "a solo trip", "a cycling tour", "a trip to the mountains", "a city break by bus"],
        "prompts": ["How should I plan {s}?", "What should I pack for {s}?", "How can I save money on {s}?"],
        "good": ["For {s}, book the main transport early and keep a copy of every ticket on your phone.",
                 "Pack light for {s}: a few layers, comfortable shoes and a small first-aid kit.",
                 "Plan one or two fixed activities for {s} and leave the rest of the time flexible.",
                 "Check the local weather and opening hours before {s} so nothing surprises you."],
        "extra": ["Tell someone at home your rough plan.", "Keep a little cash for places that do not take cards."],
    },
    "health": {
        "subjects": ["sleeping better", "drinking more water", "reducing screen time", "eating more vegetables",
                     "managing stress", "sitting less at work", "waking up earlier", "cutting down on sugar",
                     "taking regular breaks", "keeping a steady routine", "walking more each day",
                     "eating breakfast", "stretching in the morning", "relaxing before bed", "avoiding late snacks",
                     "building a habit of rest"],
        "prompts": ["How can I get better at {s}?", "What habits help with {s}?", "Where should I start with {s}?"],
        "good": ["For {s}, start with one small change and repeat it every day for two weeks.",
                 "Make {s} easier by setting a reminder and tracking it on a simple calendar.",
                 "Pair {s} with something you already do each day so it becomes automatic.",
                 "Be patient with {s}: missing one day is fine, just continue the next morning."],
        "extra": ["If a problem persists, a doctor can give advice for your situation.",
                  "Small steady steps usually last longer than big sudden changes."],
    },
    "programming": {
        "subjects": ["Python lists", "writing functions", "reading error messages", "using git",
                     "writing unit tests", "naming variables", "debugging a loop", "learning SQL",
                     "using dictionaries", "reading documentation", "handling exceptions", "formatting strings",
                     "organising a project", "using the command line", "learning recursion", "reviewing code"],
        "prompts": ["How do I get started with {s}?", "What are good practices for {s}?",
                    "Can you explain how to approach {s}?"],
        "good": ["For {s}, write a tiny example first and run it to see exactly what happens.",
                 "Keep {s} simple: one clear idea per step, and test each step before moving on.",
                 "Read the official documentation on {s} and copy one example into a file to try it.",
                 "When {s} gets confusing, print the intermediate values and compare them with what you expect."],
        "extra": ["Small, frequent commits make mistakes easy to undo.",
                  "Explaining the code out loud often reveals the problem."],
    },
    "finance": {
        "subjects": ["making a monthly budget", "building an emergency fund", "paying off a credit card",
                     "saving for a holiday", "tracking daily spending", "comparing bank accounts",
                     "planning for a large purchase", "reducing monthly bills", "saving on groceries",
                     "setting savings goals", "avoiding impulse buys", "splitting costs with roommates",
                     "starting to invest", "reviewing subscriptions", "saving for a deposit", "paying bills on time"],
        "prompts": ["How do I go about {s}?", "What is a sensible first step for {s}?", "Any advice on {s}?"],
        "good": ["For {s}, write down your income and fixed costs first so you know what is left.",
                 "Automate {s} where you can, with a transfer on the day you are paid.",
                 "Review {s} once a month and adjust the numbers instead of giving up.",
                 "Set a clear target for {s} and break it into small monthly amounts."],
        "extra": ["A simple spreadsheet is enough to start.", "Keep receipts for a month to see where money goes."],
    },
    "gardening": {
        "subjects": ["basil", "tomatoes", "mint", "strawberries", "succulents", "lettuce", "rosemary",
                     "a small lemon tree", "peppers", "sunflowers", "an orchid", "carrots", "lavender",
                     "a fern", "beans", "a snake plant"],
        "prompts": ["How do I keep {s} healthy?", "What does {s} need to grow well?", "How often should I water {s}?"],
        "good": ["Give {s} plenty of light and check the soil with your finger before watering.",
                 "Water {s} when the top of the soil is dry, and make sure the pot drains well.",
                 "Feed {s} lightly during the growing season and remove any yellow leaves.",
                 "Keep {s} away from cold drafts and turn the pot now and then so it grows evenly."],
        "extra": ["A pot with drainage holes prevents rotting roots.", "Morning watering lets leaves dry by evening."],
    },
    "study": {
        "subjects": ["preparing for an exam", "learning vocabulary", "taking notes in lectures",
                     "reading a textbook", "studying maths", "writing an essay plan", "staying focused",
                     "revising with friends", "memorising dates", "learning a new language",
                     "managing study time", "practising past papers", "understanding physics",
                     "studying late at night", "keeping motivated", "summarising articles"],
        "prompts": ["What is a good method for {s}?", "How can I improve at {s}?", "Any study tips for {s}?"],
        "good": ["For {s}, study in short sessions of about thirty minutes with a break after each one.",
                 "Test yourself when {s} instead of only rereading: recall is what builds memory.",
                 "Plan {s} on a calendar so each topic gets time before the deadline.",
                 "Explain what you learned while {s} in your own words; gaps become obvious."],
        "extra": ["A quiet place without a phone nearby helps a lot.", "Sleep is part of learning, not a break from it."],
    },
    "home": {
        "subjects": ["a dripping tap", "a squeaky door", "a blocked sink", "a loose cabinet handle",
                     "a draughty window", "a wobbly table", "peeling paint", "a running toilet",
                     "a stuck drawer", "a small hole in a wall", "a flickering lamp", "mould in the bathroom",
                     "a noisy radiator", "a cracked tile", "a loose floorboard", "a jammed lock"],
        "prompts": ["How do I fix {s}?", "What should I check first with {s}?", "Can I repair {s} myself?"],
        "good": ["For {s}, switch off the water or power that feeds it before you start.",
                 "Look closely at {s} to find the worn part, then buy an identical replacement.",
                 "Fix {s} with basic tools, working slowly and keeping the small parts in a cup.",
                 "If {s} involves wiring or gas, call a qualified professional instead."],
        "extra": ["Take a photo before you take anything apart.", "Protective gloves and glasses are worth it."],
    },
    "fitness": {
        "subjects": ["starting to run", "doing push-ups", "building core strength", "stretching after exercise",
                     "cycling to work", "swimming laps", "lifting weights safely", "improving balance",
                     "exercising at home", "warming up", "training for a 5k", "doing squats",
                     "recovering after a workout", "climbing stairs", "yoga for beginners", "jumping rope"],
        "prompts": ["How should a beginner approach {s}?", "How do I make progress with {s}?",
                    "What mistakes should I avoid when {s}?"],
        "good": ["For {s}, begin gently and increase the effort by a small amount each week.",
                 "Focus on good form when {s}; it matters more than speed or weight.",
                 "Rest a day between hard sessions of {s} so your body can recover.",
                 "Write down each session of {s} so you can see your progress."],
        "extra": ["Drink water and stop if something hurts sharply.", "Consistency beats intensity for beginners."],
    },
    "writing": {
        "subjects": ["a cover letter", "a thank-you note", "a short story", "a work email", "a blog post",
                     "a product review", "a speech", "a personal statement", "meeting notes", "a complaint letter",
                     "a poem", "a report summary", "a wedding toast", "an apology message", "a newsletter",
                     "a job description"],
        "prompts": ["How do I write {s}?", "What makes {s} effective?", "Can you give me tips for writing {s}?"],
        "good": ["For {s}, decide on the one main point first and put it near the beginning.",
                 "Keep {s} clear and concrete, with short sentences and specific examples.",
                 "Read {s} aloud before sending it; awkward sentences stand out immediately.",
                 "Write a rough draft of {s} quickly, then edit it the next day with fresh eyes."],
        "extra": ["Cut any sentence that does not help the reader.", "Ask a friend to read it once."],
    },
}

# Subjects that appear in no other file: the quickstart's final evaluation prompts (helpful_test.jsonl),
# disjoint by subject from training and from the held-out prompts PPO's alarm watches.
TEST_SUBJECTS = {
    "cooking": ["a mushroom risotto", "boiled dumplings", "a fruit crumble", "a lentil soup"],
    "travel": ["a ferry crossing", "an overnight bus ride", "a trip to a national park", "a family reunion abroad"],
    "health": ["drinking less coffee", "getting more daylight", "keeping good posture", "eating slowly"],
    "programming": ["writing a README", "using a debugger", "profiling slow code", "learning regular expressions"],
    "finance": ["lowering energy bills", "planning a wedding budget", "saving for retirement",
                "choosing a phone contract"],
    "gardening": ["cucumbers", "a bonsai tree", "raspberries", "a herb window box"],
    "study": ["learning to type faster", "preparing a presentation", "reading research papers",
              "learning music theory"],
    "home": ["a leaking shower head", "a sagging shelf", "a rattling window", "a clogged gutter"],
    "fitness": ["doing lunges", "rowing on a machine", "learning to swim", "hiking uphill"],
    "writing": ["a birthday card", "a resignation letter", "a travel diary", "a recipe introduction"],
}

RUDE = ["Honestly, that is a silly question about {s}, but fine.", "Ugh, you should know this about {s} already.",
        "Whatever, {s} is not hard, just figure it out.", "Seriously, look it up yourself next time."]
HEDGE = ["As an AI, I cannot be sure about {s}.", "It depends on many factors and everyone is different.",
         "There are many opinions on {s} and no single answer.", "You may want to consider various aspects."]
REFUSE = ["I'm sorry, but I can't help with questions about {s}.", "I am not able to give advice on this topic.",
          "Please ask someone else about {s}.", "This is outside what I can discuss."]
REPEAT = ["{s} is good.", "It is good to think about {s}.", "Yes, {s}."]


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def build_prompts(rng: random.Random) -> list[dict]:
    items = []
    for topic, spec in TOPICS.items():
        for subject in spec["subjects"]:
            for template in spec["prompts"]:
                items.append({"topic": topic, "subject": subject, "prompt": template.format(s=subject)})
    rng.shuffle(items)
    return items


def good_answer(item: dict, rng: random.Random, n: int) -> list[str]:
    spec = TOPICS[item["topic"]]
    return [_cap(s.format(s=item["subject"])) for s in rng.sample(spec["good"], n)]


def defect_sentences(kind: str, item: dict, other: dict, rng: random.Random) -> list[str]:
    s = item["subject"]
    if kind == "rude":
        return [_cap(rng.choice(RUDE).format(s=s)), good_answer(item, rng, 1)[0]]
    if kind == "hedging":
        return [_cap(x.format(s=s)) for x in rng.sample(HEDGE, 2)]
    if kind == "refusal":
        return [_cap(x.format(s=s)) for x in rng.sample(REFUSE, 2)]
    if kind == "repetition":
        phrase = _cap(rng.choice(REPEAT).format(s=s))
        return [phrase] * 3
    return good_answer(other, rng, 2)  # off_topic


def defect_extra(kind: str, item: dict, other: dict, rng: random.Random) -> str:
    s = item["subject"]
    if kind == "rude":
        return _cap(rng.choice(RUDE).format(s=s))
    if kind == "hedging":
        return _cap(rng.choice(HEDGE).format(s=s))
    if kind == "refusal":
        return _cap(rng.choice(REFUSE).format(s=s))
    if kind == "repetition":
        return _cap(rng.choice(REPEAT).format(s=s))
    return rng.choice(TOPICS[other["topic"]]["extra"])


KINDS = ["rude", "hedging", "off_topic", "repetition", "refusal"]


def make_pair(item: dict, other: dict, kind: str, rng: random.Random) -> dict:
    chosen = good_answer(item, rng, rng.choice([1, 2]))
    rejected = defect_sentences(kind, item, other, rng)
    want_chosen_longer = rng.random() < 0.5
    extras = list(TOPICS[item["topic"]]["extra"])
    for _ in range(12):
        c, r = len(" ".join(chosen)), len(" ".join(rejected))
        if (c > r) == want_chosen_longer and c != r:
            break
        if want_chosen_longer:
            pool = [e for e in extras if e not in chosen] or [_cap(x.format(s=item["subject"]))
                                                              for x in TOPICS[item["topic"]]["good"]]
            chosen.append(rng.choice([p for p in pool if p not in chosen] or pool))
        else:
            rejected.append(defect_extra(kind, item, other, rng))
    return {"prompt": item["prompt"], "chosen": " ".join(chosen), "rejected": " ".join(rejected), "defect": kind}


def longer_is_chosen(pairs: list[dict]) -> float:
    return sum(len(p["chosen"]) > len(p["rejected"]) for p in pairs) / len(pairs)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


MALFORMED = {
    # file name: (bad row 2, the error it must produce)
    "missing_field.jsonl": ('{"prompt": "Hi", "chosen": "Hello there."}', "row 2, field 'rejected': missing field"),
    "empty_text.jsonl": ('{"prompt": "Hi", "chosen": "   ", "rejected": "Go away."}', "row 2, field 'chosen': empty text"),
    "identical.jsonl": ('{"prompt": "Hi", "chosen": "Hello.", "rejected": "Hello."}',
                        "row 2, field 'rejected': identical to 'chosen'"),
    "wrong_type.jsonl": ('{"prompt": "Hi", "chosen": 42, "rejected": "Go away."}',
                         "row 2, field 'chosen': expected text or a list of messages, got int"),
    "bad_ranks.jsonl": ('{"prompt": "Hi", "responses": ["a.", "b.", "c.", "d."], "ranks": [0, 5, 1, 2]}',
                        "row 2, field 'ranks': [0, 5, 1, 2] is not a ranking of 4 responses"),
    "bad_json.jsonl": ('{"prompt": "Hi", "chosen": "Hel', "row 2: not valid JSON"),
    "not_an_object.jsonl": ("[1, 2, 3]", "row 2: expected a JSON object, got list"),
    "bad_utf8.jsonl": (b'{"prompt": "Hi \xff\xfe", "chosen": "Hello.", "rejected": "Go away."}', "row 2: not valid UTF-8"),
    "overlong.jsonl": (None, "row 2: sequence of"),
}


def write_malformed(folder: Path) -> None:
    """One file per problem: three good rows with the bad one at row 2."""
    folder.mkdir(parents=True, exist_ok=True)
    good = [{"prompt": "How do I keep basil alive?", "chosen": "Give it light and water when the soil is dry.",
             "rejected": "Whatever, figure it out."},
            {"prompt": "How do I write a thank-you note?", "chosen": "Name the gift and say how you will use it.",
             "rejected": "I am not able to help with this."},
            {"prompt": "How can I sleep better?", "chosen": "Keep a steady bedtime and avoid screens late.",
             "rejected": "As an AI, I cannot be sure."}]
    for name, (bad, _) in MALFORMED.items():
        rows = [json.dumps(r).encode() for r in good]
        if name == "bad_ranks.jsonl":
            rows = [json.dumps({"prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]], "ranks": [0, 1]})
                    .encode() for r in good]
        if name == "overlong.jsonl":
            bad = json.dumps({"prompt": "Tell me everything.", "chosen": "All of it. " * 3000,
                              "rejected": "Nothing."})
        rows.insert(1, bad if isinstance(bad, bytes) else bad.encode())
        (folder / name).write_bytes(b"\n".join(rows) + b"\n")
    lines = ["# Malformed inputs", "", "Each file has three good rows and one bad row at row 2. "
             "Loading it (e.g. `tether rm examples/rm_tiny.yaml data.train_file=examples/data/malformed/<file>"
             " data.overlong=error`) prints one line naming the file, row and field, and exits with code 2:", "",
             "| file | error |", "|---|---|"]
    lines += [f"| `{name}` | `{name} {message} ...` |" for name, (_, message) in MALFORMED.items()]
    lines.append("")
    lines.append("`overlong.jsonl` only fails with `data.overlong=error`; the default (`truncate`) truncates and "
                 "reports the count, `skip` drops and counts it.")
    (folder / "README.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    items = build_prompts(rng)  # 10 topics x 16 subjects x 3 templates = 480 prompts
    # disjoint splits BY SUBJECT so held-out prompts are genuinely new
    subjects = sorted({(i["topic"], i["subject"]) for i in items})
    rng.shuffle(subjects)
    held = set(subjects[: len(subjects) // 5])
    prompt_only = set(subjects[len(subjects) // 5: len(subjects) // 5 + 10])
    train = [i for i in items if (i["topic"], i["subject"]) not in held | prompt_only]
    evals = [i for i in items if (i["topic"], i["subject"]) in held]
    prompts_split = [i for i in items if (i["topic"], i["subject"]) in prompt_only]
    other_of = lambda item: rng.choice([o for o in items if o["topic"] != item["topic"]])  # noqa: E731

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "sft.jsonl", [{"prompt": i["prompt"], "completion": " ".join(good_answer(i, rng, 2))}
                                    for i in train])
    write_jsonl(out / "sft_messages.jsonl", [
        {"messages": [{"role": "user", "content": i["prompt"]},
                      {"role": "assistant", "content": " ".join(good_answer(i, rng, 2))}]} for i in train[:50]])
    pairs = {}
    for name, split, reps in (("preferences", train, 2), ("preferences_eval", evals, 2)):
        rows = [make_pair(i, other_of(i), KINDS[(n * reps + r) % len(KINDS)], rng)
                for n, i in enumerate(split) for r in range(reps)]
        rng.shuffle(rows)
        pairs[name] = rows
        write_jsonl(out / f"{name}.jsonl", [{k: v for k, v in row.items() if k != "defect"} for row in rows])
    rankings = []
    for n, i in enumerate(train[:100]):
        good = " ".join(good_answer(i, rng, 2))
        mediocre = _cap(HEDGE[1]) + " " + good_answer(i, rng, 1)[0]
        bad1 = " ".join(defect_sentences(KINDS[n % 5], i, other_of(i), rng))
        bad2 = " ".join(defect_sentences(KINDS[(n + 2) % 5], i, other_of(i), rng))
        responses, ranks = [good, mediocre, bad1, bad2], [0, 1, 2, 3 if n % 10 else 2]  # every 10th row: a tie
        order = list(range(4))
        rng.shuffle(order)
        rankings.append({"prompt": i["prompt"], "responses": [responses[k] for k in order],
                         "ranks": [ranks[k] for k in order]})
    write_jsonl(out / "rankings.jsonl", rankings)
    kto = []
    for n, i in enumerate(train[:200]):
        if n % 2 == 0:
            kto.append({"prompt": i["prompt"], "completion": " ".join(good_answer(i, rng, 2)), "label": True})
        else:
            kto.append({"prompt": i["prompt"], "completion": " ".join(defect_sentences(KINDS[n % 5], i, other_of(i),
                                                                                       rng)), "label": False})
    write_jsonl(out / "kto.jsonl", kto)
    write_jsonl(out / "prompts.jsonl", [{"prompt": i["prompt"]} for i in prompts_split])
    # held-out prompts for `tether eval`: every prompt of the held-out subjects (those of preferences_eval.jsonl,
    # in no training file), one topic after another so that the first N of them span the topics
    by_topic = [[i for i in evals if i["topic"] == topic] for topic in TOPICS]
    write_jsonl(out / "prompts_eval.jsonl", [{"prompt": i["prompt"]} for group in itertools.zip_longest(*by_topic)
                                             for i in group if i is not None])
    tests = [[{"prompt": template.format(s=subject)} for subject in TEST_SUBJECTS[topic]
              for template in TOPICS[topic]["prompts"]] for topic in TOPICS]
    write_jsonl(out / "helpful_test.jsonl", [row for group in zip(*tests) for row in group])  # topics interleaved
    write_malformed(out / "malformed")
    for name, rows in pairs.items():
        frac = longer_is_chosen(rows)
        print(f"{name}: {len(rows)} pairs, longer response is the chosen one in {frac:.3f} of pairs")
        assert 0.45 <= frac <= 0.55, f"{name}: length is informative ({frac:.3f})"
    print(f"sft: {len(train)} rows, prompts: {len(prompts_split)}, held-out prompts: {len(evals)}, "
          f"rankings: {len(rankings)}, kto: {len(kto)}")


if __name__ == "__main__":
    main()
