"""Side-by-side benchmark: tether vs TRL on fixed workloads, on this machine, back to back.

    python -m pip install -e ".[bench]"        # TRL 1.16 next to tether
    python bench/run.py                        # tiny + SmolLM2, every workload
    python bench/run.py --models tiny --workloads sft,dpo
    python bench/run.py --device cuda --dtype bf16   # on a GPU: bf16 weights in both libraries

Each (library, model, workload) runs in its own process (``bench/workloads.py``). The
first two steps are warm-up and left out; the table reports the median step time (min–max),
tokens/s, peak RSS, MFU and the tether/TRL speed ratio. Results go to
``bench/results/<date>.json`` and ``bench/results/<date>.md`` (``<date>-cuda-bf16.*`` for other
devices and dtypes, with the GPU's name in the file and its peak memory in the table).

MFU = k · N · tokens per step / step time / this machine's matmul FLOP/s in the run's dtype on
its device (measured here: fp32 on 2 CPU threads by default; median over n = 1024, 2048, 4096),
with N the weights of every linear layer including the tied head and k = 6 for sft/rm, 8 for
dpo (a reference forward), 10 for grpo/ppo (generation and the reference forward on top of
training).

tether keeps freed CPU memory for reuse (``tether.utils.allocator``); TRL runs with glibc's defaults, as its
users run it. ``--trl-allocator keep`` gives TRL's processes the same glibc settings through glibc's environment
variables, to see how much of a ratio is that setting.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
K_FLOPS = {"sft": 6, "rm": 6, "dpo": 8, "grpo": 10, "grpo_fixed32": 10, "ppo": 10}
STEPS = {"tiny": 10, "smollm2": 8}
WORDS = ("time people year way day thing world life hand part child eye place work week case point number group "
         "problem fact water room mother area money story month lot right study book job word business issue side "
         "kind head house service friend father power hour game line end member law car city community name team "
         "minute idea kid body information back parent face others level office door health person art war history "
         "party result change morning reason research girl guy moment air teacher force education").split()


def matmul_flops(threads: int = 2, device: str = "cpu", dtype: str = "fp32") -> float:
    """This machine's matmul FLOP/s on ``device`` in ``dtype``: median over sizes 1024, 2048, 4096."""
    import torch

    torch.set_num_threads(threads)
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    budget = 2e10 if device == "cpu" else 2e13  # FLOPs per size: about 0.1 s either way
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rates = []
    for n in (1024, 2048, 4096):
        a, b = (torch.randn(n, n, device=device, dtype=torch_dtype) for _ in range(2))
        a @ b  # warm-up
        sync()
        repeats = max(1, int(budget // (2 * n ** 3)))
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync()
        rates.append(2 * n ** 3 * repeats / (time.perf_counter() - start))
    return statistics.median(rates)


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def make_data(directory: Path, seed: int = 0) -> None:
    """Deterministic synthetic plain text: 256 SFT rows, 256 preference rows, 64 prompts."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    sft = [{"prompt": _text(rng, 14), "completion": _text(rng, rng.randint(20, 60))} for _ in range(256)]
    prefs = []
    for _ in range(256):
        n = 27
        prefs.append({"prompt": _text(rng, n), "chosen": _text(rng, 28), "rejected": _text(rng, 28 + rng.choice([-1, 0, 1]))})
    prompts = [{"prompt": _text(rng, 14)} for _ in range(64)]
    for name, rows in (("sft.jsonl", sft), ("preferences.jsonl", prefs), ("prompts.jsonl", prompts)):
        (directory / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_models(directory: Path) -> dict[str, str]:
    """SmolLM2-135M-Instruct as a plain fp32 HF directory and a tiny random Llama (seed 0); EOS = pad = <|im_end|>."""
    from tether.config import ModelConfig
    from tether.models.loading import load_causal_lm, load_tokenizer, save_model

    tokenizer = load_tokenizer("embedded")
    tokenizer.pad_token = tokenizer.eos_token
    out = {}
    tiny = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16}
    for name, cfg in (("tiny", ModelConfig(name_or_path="embedded", random_init=True, config_overrides=tiny)),
                      ("smollm2", ModelConfig(name_or_path="embedded"))):
        path = directory / name
        if not (path / "config.json").is_file():
            model = load_causal_lm(cfg, seed=0, pad_token_id=tokenizer.pad_token_id)
            model.config.pad_token_id = tokenizer.pad_token_id
            save_model(model, tokenizer, path, {"recipe": "bench"})
        out[name] = str(path)
    return out


def linear_weights(model_dir: str, reward_model: bool = False) -> int:
    """N: weights of every linear layer, with the (tied) output head counted once; a reward model has a
    1-output score head instead of the vocabulary head."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    model = (AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1) if reward_model
             else AutoModelForCausalLM.from_pretrained(model_dir))
    return int(sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)))


def tokens_per_step(workload: str, data: Path, model_dir: str) -> float:
    """Mean real tokens processed per optimiser step (prompt + response) for the workload's batch."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    if workload == "sft":
        rows = [json.loads(line) for line in (data / "sft.jsonl").read_text().splitlines()]
        return 8 * statistics.mean(min(128, count(r["prompt"]) + count(r["completion"]) + 1) for r in rows)
    if workload in ("rm", "dpo"):
        rows = [json.loads(line) for line in (data / "preferences.jsonl").read_text().splitlines()]
        return 8 * statistics.mean(2 * count(r["prompt"]) + count(r["chosen"]) + count(r["rejected"]) + 2 for r in rows)
    rows = [json.loads(line) for line in (data / "prompts.jsonl").read_text().splitlines()]
    return 8 * (statistics.mean(count(r["prompt"]) for r in rows) + 32)


# glibc's environment variables for what tether.utils.allocator sets with mallopt: no mmap for large blocks, no trimming
KEEP_FREED_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}


def run_one(lib: str, workload: str, model: str, data: Path, steps: int, device: str = "cpu",
            dtype: str = "fp32", env: dict[str, str] | None = None) -> dict:
    cmd = [sys.executable, str(HERE / "workloads.py"), "--lib", lib, "--workload", workload, "--model", model,
           "--data", str(data), "--steps", str(steps), "--device", device, "--dtype", dtype]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        return {"lib": lib, "workload": workload, "error": (done.stderr or done.stdout)[-1500:]}
    return json.loads(line[6:])


def summarise(result: dict, tokens: float, n_weights: int, flops: float) -> dict:
    times = result["step_times"][2:]  # the first two steps are warm-up
    median = statistics.median(times)
    return {"median_s": median, "min_s": min(times), "max_s": max(times), "steps_timed": len(times),
            "tokens_per_s": tokens / median, "peak_rss_mb": result["peak_rss_mb"],
            "mfu": K_FLOPS[result["workload"]] * n_weights * tokens / median / flops,
            **({"peak_gpu_mb": result["peak_gpu_mb"]} if "peak_gpu_mb" in result else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,smollm2")
    parser.add_argument("--workloads", default="sft,rm,dpo,grpo,grpo_fixed32,ppo")
    parser.add_argument("--libs", default="tether,trl")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--trl-allocator", choices=("system", "keep"), default="system",
                        help="TRL's processes with glibc's defaults (as its users run it) or with the freed-memory "
                             "setting tether uses on the CPU")
    parser.add_argument("--name", default=None,
                        help="results file name (default: the date, with -2, -3, ... when that run exists)")
    args = parser.parse_args()
    data = WORK / "data"
    make_data(data)
    models = make_models(WORK / "models")
    flops = matmul_flops(device=args.device, dtype=args.dtype)
    what = f"{args.dtype} matmul on {args.device}"
    print(f"{what}{', 2 threads' if args.device == 'cpu' else ''}: {flops / 1e9:.1f} GFLOP/s")
    rows = []
    for model_name in args.models.split(","):
        n_lm, n_rm = linear_weights(models[model_name]), linear_weights(models[model_name], reward_model=True)
        for workload in args.workloads.split(","):
            n_weights = n_rm if workload == "rm" else n_lm
            steps = STEPS[model_name] - (2 if workload in ("grpo", "grpo_fixed32", "ppo") and model_name == "smollm2" else 0)
            tokens = tokens_per_step(workload, data, models[model_name])
            for lib in args.libs.split(","):
                if lib == "trl" and workload == "ppo":
                    continue  # TRL 1.16 has no PPO trainer
                print(f"{model_name} {workload} {lib} ...", flush=True)
                env = KEEP_FREED_MEMORY if lib == "trl" and args.trl_allocator == "keep" else None
                result = run_one(lib, workload, models[model_name], data, steps, args.device, args.dtype, env)
                row = {"model": model_name, "workload": workload, "lib": lib, "n_weights": n_weights,
                       "tokens_per_step": tokens}
                if "error" in result:
                    row["error"] = result["error"]
                    print(f"  failed: {result['error'][-300:]}")
                else:
                    row.update(summarise(result, tokens, n_weights, flops), step_times=result["step_times"],
                               process_seconds=result["total_seconds"])
                    print(f"  median {row['median_s']:.3f} s/step, MFU {row['mfu']:.0%}, peak {row['peak_rss_mb']:.0f} MB")
                rows.append(row)
    stamp = time.strftime("%Y-%m-%d")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    import platform

    import torch

    result = {"date": stamp, "machine": {"platform": platform.platform(), "processor": platform.processor(),
                                         "torch": torch.__version__, "threads": 2},
              "device": args.device, "dtype": args.dtype, "matmul_flops": flops, "trl_allocator": args.trl_allocator,
              "rows": rows}
    if args.device == "cuda":
        result["machine"]["gpu"] = torch.cuda.get_device_name(0)
    name = args.name or unused_name(out_dir, stamp if (args.device, args.dtype) == ("cpu", "fp32")
                                    else f"{stamp}-{args.device}-{args.dtype}")
    try:
        import trl

        result["machine"]["trl"] = trl.__version__
    except ImportError:
        pass
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown_table(rows)
    where = result["machine"].get("gpu", "2 threads")
    peak = " Peak MB: GPU memory allocated (torch.cuda.max_memory_allocated)." if args.device == "cuda" else ""
    allocator = (" TRL ran with tether's freed-memory allocator setting (--trl-allocator keep)."
                 if args.trl_allocator == "keep" else "")
    (out_dir / f"{name}.md").write_text(f"# Benchmark {name}\n\n{what}: {flops / 1e9:.1f} GFLOP/s ({where}).{peak}"
                                        f"{allocator}\n\n" + table + "\n")
    print(table)
    print(f"wrote {out_dir / name}.json and .md")


def unused_name(out_dir: Path, base: str) -> str:
    """``base``, or ``base-2``, ``base-3``, ... : a second run on one day does not overwrite the first."""
    name, n = base, 1
    while (out_dir / f"{name}.json").exists():
        n += 1
        name = f"{base}-{n}"
    return name


def markdown_table(rows: list[dict]) -> str:
    by_key = {(r["model"], r["workload"], r["lib"]): r for r in rows}
    lines = ["| model | workload | tether s/step (min–max) | TRL s/step (min–max) | speed ratio tether/TRL | "
             "tether MFU | TRL MFU | tether peak MB | TRL peak MB |", "|---|---|---|---|---|---|---|---|---|"]
    for (model, workload, lib), r in by_key.items():
        if lib != "tether":
            continue
        t = by_key.get((model, workload, "trl"))

        def cell(x):
            if x is None:
                return "–"
            if "error" in x:
                return "failed"
            return f"{x['median_s']:.3f} ({x['min_s']:.3f}–{x['max_s']:.3f})"

        ratio = (f"{t['median_s'] / r['median_s']:.2f}x" if t and "error" not in t and "error" not in r else "–")
        grpo = by_key.get((model, "grpo", "tether"))
        if workload == "ppo" and grpo and "error" not in grpo and "error" not in r:
            # TRL has no PPO: the yardstick is tether's own GRPO iteration on the same model
            ratio = f"{r['median_s'] / grpo['median_s']:.2f}x tether's GRPO"
        mfu = lambda x: f"{x['mfu']:.0%}" if x and "mfu" in x else "–"  # noqa: E731
        peak = lambda x: (f"{x.get('peak_gpu_mb', x['peak_rss_mb']):.0f}"  # noqa: E731
                          if x and "peak_rss_mb" in x else "–")
        lines.append(f"| {model} | {workload} | {cell(r)} | {cell(t)} | {ratio} | {mfu(r)} | {mfu(t)} | {peak(r)} | "
                     f"{peak(t)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
