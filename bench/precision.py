"""What bf16 buys on this machine: matmuls, a SmolLM2 training step, sampling, and the log-prob error, per precision.

    python bench/precision.py                 # ~3 minutes on 2 cores; writes bench/results/<date>-precision.{json,md}
    python bench/precision.py --rounds 5      # more repeats (the best of each is reported)

Every measurement runs in this one process, the precisions interleaved round by round, so a ratio compares
numbers taken seconds apart (these VMs drift by 10-30% over a day). Reported, each the best of ``--rounds``:

- ``matmul``: n x n products on 2 threads, GFLOP/s, fp32 and bf16, n = 1024, 2048 (the rate bf16 could give);
- ``train step``: SmolLM2-135M, 8 rows x 128 tokens, every token scored: tether's scored log-probs forward and
  backward (:func:`tether.models.scoring.scored_logprobs`), in fp32, bf16-mixed (fp32 weights, autocast) and
  bf16 (bf16 weights);
- ``sampling``: 8 prompts x 32 new tokens with tether's ``generate`` (temperature 0.7, every token sampled);
- ``log-prob error``: on one rollout sampled in bf16-mixed, the mean |Δ log π| per token between the bf16-mixed
  sampler and the bf16-mixed trainer (``generation/logprob_gap``), and between the bf16-mixed / bf16 trainer and
  fp32's.

Also what the CPU reports (model, native-bf16 flags) and what ``precision=auto`` picks here, with its reason.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PRECISIONS = ("fp32", "bf16-mixed", "bf16")
PROMPTS = ["The movie was", "I went to the store and", "My favourite food is", "Tell me about the weather",
           "The hotel room was", "Yesterday I", "This book", "The best way to learn"]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def matmul_rate(dtype: torch.dtype, n: int) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    repeats = max(2, int(4e9 // (2 * n ** 3)))
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    from tether.config import ModelConfig
    from tether.models.loading import load_causal_lm, load_tokenizer
    from tether.models.precision import cpu_bf16_flags, resolve_precision
    from tether.models.scoring import scored_logprobs
    from tether.rollout.generation import GenerationConfig, generate, response_logprobs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default=None, help="results file name (default <date>-precision)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    auto = resolve_precision("auto", "cpu")
    print(auto.describe(), flush=True)
    tokenizer = load_tokenizer("embedded")
    models = {p: load_causal_lm(ModelConfig(precision=p), pad_token_id=tokenizer.pad_token_id) for p in PRECISIONS}
    torch.manual_seed(0)
    ids = torch.randint(0, 49000, (8, 128))
    mask = torch.ones_like(ids)
    tokenizer.padding_side = "left"
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    gen = GenerationConfig(max_new_tokens=32, min_new_tokens=32, temperature=0.7)
    times: dict[str, list[float]] = {}

    def timed(key: str, fn) -> None:
        start = time.perf_counter()
        fn()
        times.setdefault(key, []).append(time.perf_counter() - start)

    def train_step(model) -> None:
        model.train()
        logps = scored_logprobs(model, ids, mask, mask)
        (-logps.sum() / mask.sum()).backward()
        model.zero_grad(set_to_none=True)

    rates: dict[str, list[float]] = {}
    for round_ in range(args.rounds + 1):  # round 0 warms every path up and is not counted
        for n in (1024, 2048):
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                rate = matmul_rate(dtype, n)
                if round_:
                    rates.setdefault(f"{name} n={n}", []).append(rate)
        for p, model in models.items():
            timed(f"train step {p}", lambda m=model: train_step(m))
            timed(f"sampling {p}", lambda m=model: generate(m, enc.input_ids, enc.attention_mask, gen,
                                                            tokenizer.eos_token_id, tokenizer.pad_token_id,
                                                            seeds=list(range(8))))
        if not round_:
            times.clear()
        print(f"round {round_} done", flush=True)
    rollout = generate(models["bf16-mixed"], enc.input_ids, enc.attention_mask,
                       GenerationConfig(max_new_tokens=32, temperature=0.7), tokenizer.eos_token_id,
                       tokenizer.pad_token_id, seeds=list(range(8)))
    real = rollout.response_mask.bool()
    with torch.no_grad():
        trainer = {p: response_logprobs(m, rollout, temperature=0.7) for p, m in models.items()}
    mean_abs = lambda a, b: float((a - b)[real].abs().mean())  # noqa: E731
    errors = {"sampler vs trainer, bf16-mixed (generation/logprob_gap)": mean_abs(rollout.sampler_logps,
                                                                                  trainer["bf16-mixed"]),
              "trainer bf16-mixed vs fp32": mean_abs(trainer["bf16-mixed"], trainer["fp32"]),
              "trainer bf16 vs fp32": mean_abs(trainer["bf16"], trainer["fp32"]),
              "tokens": int(real.sum())}
    best = {k: min(v) for k, v in times.items()}
    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "flags": cpu_bf16_flags(),
              "torch": torch.__version__, "threads": 2, "rounds": args.rounds, "auto": auto.describe(),
              "matmul_gflops": {k: max(v) for k, v in rates.items()}, "seconds": best, "all_seconds": times,
              "logprob_error": errors}
    lines = [f"# What bf16 buys here ({result['date']})", "",
             f"{result['cpu']}, native-bf16 flags: {', '.join(result['flags']) or 'none'}; torch {torch.__version__}, "
             f"2 threads; best of {args.rounds} interleaved rounds. `precision=auto`: {auto.describe()}.", "",
             "| matmul | GFLOP/s |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in result["matmul_gflops"].items()]
    lines += ["", "| SmolLM2-135M | fp32 | bf16-mixed | bf16 | bf16-mixed vs fp32 |", "|---|---|---|---|---|"]
    for what in ("train step", "sampling"):
        row = [best[f"{what} {p}"] for p in PRECISIONS]
        lines.append(f"| {what} (s) | {row[0]:.2f} | {row[1]:.2f} | {row[2]:.2f} | {row[0] / row[1]:.2f}x |")
    lines += ["", f"Mean |Δ log π| per token over {errors['tokens']} sampled tokens (temperature 0.7):", ""]
    lines += [f"- {k}: {v:.4f}" for k, v in errors.items() if k != "tokens"]
    name = args.name or f"{result['date']}-precision"
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out / name}.json and .md")


if __name__ == "__main__":
    main()
