"""Side-by-side benchmark: tether vs TRL on fixed workloads, on this machine, back to back.

    python -m pip install -e ".[bench]"        # TRL 1.16 next to tether
    python bench/run.py                        # tiny + SmolLM2, every workload, fp32
    python bench/run.py --models tiny --workloads sft,dpo
    python bench/run.py --dtype fp32,bf16-mixed      # both precisions in one sitting, one results file
    python bench/run.py --device cuda --dtype bf16   # on a GPU: bf16 weights in both libraries

Each (library, model, workload, dtype) runs in its own process (``bench/workloads.py``). The first two steps are
warm-up and left out; the table reports the median step time (min–max), tokens/s, peak RSS, MFU and the tether/TRL
speed ratio.

``--dtype`` takes one of ``fp32`` (default), ``bf16-mixed``, ``bf16``, or a comma-separated list of them:

- ``fp32``: fp32 weights and compute in both libraries.
- ``bf16-mixed``: fp32 master weights and fp32 AdamW state, matrix products in bf16 under ``torch.autocast``.
  tether runs every workload with ``ModelConfig(precision="bf16-mixed")`` (every model it loads: autocast forward,
  vocabulary head and score heads in fp32 on the fp32 weights, one bf16 cast of the weights per rollout). TRL runs
  with ``bf16=True`` (plus ``use_cpu=True`` on the CPU, which transformers requires before it allows bf16 there) and
  fp32 weights: accelerate wraps each prepared model's forward in ``torch.autocast(<device>, bfloat16)`` (on the
  CPU, CPU autocast), its head included, and casts the outputs to fp32.
- ``bf16``: bf16 weights and compute in both libraries (meant for a GPU; tether ``model.dtype=bfloat16``, TRL's
  models loaded in bf16 with ``bf16=False``).

With several dtypes, each (model, workload) runs in every dtype back to back (tether then TRL within a dtype), so
the fp32 / bf16-mixed ratio compares runs minutes apart on the same machine.

Results go to ``bench/results/<name>.json`` and ``.md``, ``<name>`` being ``<date>`` for a cpu fp32 run,
``<date>-<device>-<dtype>`` for one other device or dtype (``2026-12-05-cpu-bf16-mixed``, ``-cuda-bf16``) and
``<date>-<device>-<dtype1>+<dtype2>...`` for several dtypes (``2026-12-05-cpu-fp32+bf16-mixed``), with -2, -3, ...
when that name exists, or ``--name``. A single-dtype json keeps the layout it always had (``dtype``,
``matmul_flops``, ``rows``); a multi-dtype json has ``dtypes`` and ``tables`` (one per dtype: ``dtype``,
``matmul_dtype``, ``matmul_flops``, ``rows``) and, when both fp32 and bf16-mixed ran, ``bf16_mixed_vs_fp32``: per
(model, workload, lib) the speed ratio fp32 median / bf16-mixed median (above 1: bf16-mixed is faster). The md has
one table per dtype, headed by the dtype and its matmul rate, then a "bf16-mixed vs fp32" table. On a GPU the
files carry the GPU's name and the tables its peak memory.

``grpo_dapo`` is tether's GRPO with ``loss=dapo`` (clip-higher, token mean) and dynamic sampling on (groups whose
rewards are all equal re-sampled) against TRL's GRPO with its ``dapo`` loss type (TRL has no dynamic sampling;
its ``grpo`` row runs the same loss type already); a step that re-samples costs tether more generation.

RL rows (grpo, grpo_dapo, grpo_fixed32, ppo) also carry ``time_split`` (medians over the timed steps: ``generate_s``,
``sampling_s`` = generation + rewards + reference log-probs, ``training_s`` = the rest of the step, and
``sampling_share``) and ``phases`` (the median of every phase the workload recorded: tether's ``time/*`` and
``generation/*`` metrics, TRL GRPO's profiled blocks), shown in a last md table; other workloads record no split.

MFU = k · N · tokens per step / step time / this machine's matmul FLOP/s on its device in the dtype the run
multiplies in (measured in the same run: fp32 for fp32, bf16 for bf16-mixed and bf16; 2 CPU threads by default;
median over n = 1024, 2048, 4096), with N the weights of every linear layer including the tied head and k = 6 for
sft/rm, 8 for dpo (a reference forward), 10 for grpo/ppo (generation and the reference forward on top of
training). (In tether's bf16-mixed the heads' products run in fp32, still counted against the bf16 rate.)

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
K_FLOPS = {"sft": 6, "rm": 6, "dpo": 8, "grpo": 10, "grpo_dapo": 10, "grpo_fixed32": 10, "ppo": 10}
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


DTYPES = ("fp32", "bf16-mixed", "bf16")
MATMUL_DTYPE = {"fp32": "fp32", "bf16-mixed": "bf16", "bf16": "bf16"}  # the matmul rate a dtype's MFU is against
DESCRIBE = {
    "fp32": "fp32 weights and compute in both libraries",
    "bf16-mixed": "tether `precision=bf16-mixed` (fp32 weights and AdamW state, bf16 autocast, vocabulary and score "
                  "heads in fp32); TRL `bf16=True` with fp32 weights (accelerate's bf16 autocast, heads included)",
    "bf16": "bf16 weights and compute in both libraries, no fp32 master copy",
}


def dtype_list(text: str) -> list[str]:
    """``--dtype``: one dtype or a comma-separated list of them, in the order given."""
    dtypes = [d.strip() for d in text.split(",") if d.strip()]
    unknown = [d for d in dtypes if d not in DTYPES]
    if not dtypes or unknown or len(set(dtypes)) != len(dtypes):
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of distinct dtypes from {', '.join(DTYPES)}")
    return dtypes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,smollm2")
    parser.add_argument("--workloads", default="sft,rm,dpo,grpo,grpo_dapo,grpo_fixed32,ppo")
    parser.add_argument("--libs", default="tether,trl")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", type=dtype_list, default=["fp32"],
                        help=f"one of {', '.join(DTYPES)}, or several comma-separated (e.g. fp32,bf16-mixed): each "
                             "(model, workload) runs in every dtype back to back, into one results file")
    parser.add_argument("--trl-allocator", choices=("system", "keep"), default="system",
                        help="TRL's processes with glibc's defaults (as its users run it) or with the freed-memory "
                             "setting tether uses on the CPU")
    parser.add_argument("--name", default=None,
                        help="results file name (default: the date, with the device and dtype(s) unless cpu/fp32, "
                             "and -2, -3, ... when that run exists)")
    args = parser.parse_args()
    dtypes = args.dtype
    data = WORK / "data"
    make_data(data)
    models = make_models(WORK / "models")
    rates = {m: matmul_flops(device=args.device, dtype=m) for m in dict.fromkeys(MATMUL_DTYPE[d] for d in dtypes)}
    what = {d: f"{MATMUL_DTYPE[d]} matmul on {args.device}" for d in dtypes}
    for m, rate in rates.items():
        print(f"{m} matmul on {args.device}{', 2 threads' if args.device == 'cpu' else ''}: {rate / 1e9:.1f} GFLOP/s")
    rows: dict[str, list[dict]] = {d: [] for d in dtypes}
    for model_name in args.models.split(","):
        n_lm, n_rm = linear_weights(models[model_name]), linear_weights(models[model_name], reward_model=True)
        for workload in args.workloads.split(","):
            n_weights = n_rm if workload == "rm" else n_lm
            steps = STEPS[model_name] - (2 if workload in ("grpo", "grpo_dapo", "grpo_fixed32", "ppo") and model_name == "smollm2" else 0)
            tokens = tokens_per_step(workload, data, models[model_name])
            for dtype in dtypes:  # the dtypes of one (model, workload) back to back: their ratio sees the same machine
                flops = rates[MATMUL_DTYPE[dtype]]
                for lib in args.libs.split(","):
                    if lib == "trl" and workload == "ppo":
                        continue  # TRL 1.16 has no PPO trainer
                    print(f"{model_name} {workload} {dtype} {lib} ...", flush=True)
                    env = KEEP_FREED_MEMORY if lib == "trl" and args.trl_allocator == "keep" else None
                    result = run_one(lib, workload, models[model_name], data, steps, args.device, dtype, env)
                    row = {"model": model_name, "workload": workload, "lib": lib, "n_weights": n_weights,
                           "tokens_per_step": tokens}
                    if "error" in result:
                        row["error"] = result["error"]
                        print(f"  failed: {result['error'][-300:]}")
                    else:
                        row.update(summarise(result, tokens, n_weights, flops), step_times=result["step_times"],
                                   process_seconds=result["total_seconds"])
                        row.update(time_split(result))
                        print(f"  median {row['median_s']:.3f} s/step, MFU {row['mfu']:.0%}, "
                              f"peak {row['peak_rss_mb']:.0f} MB")
                    rows[dtype].append(row)
    stamp = time.strftime("%Y-%m-%d")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    import platform

    import torch

    machine = {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
               "threads": 2}
    if args.device == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(0)
    try:
        import trl

        machine["trl"] = trl.__version__
    except ImportError:
        pass
    tables = [{"dtype": d, "matmul_dtype": MATMUL_DTYPE[d], "matmul_flops": rates[MATMUL_DTYPE[d]], "rows": rows[d]}
              for d in dtypes]
    result = {"date": stamp, "machine": machine, "device": args.device}
    if len(dtypes) == 1:  # the layout single-dtype runs always had
        result.update(dtype=dtypes[0], matmul_dtype=tables[0]["matmul_dtype"], matmul_flops=tables[0]["matmul_flops"],
                      trl_allocator=args.trl_allocator, rows=rows[dtypes[0]])
    else:
        result.update(dtypes=dtypes, trl_allocator=args.trl_allocator, tables=tables)
        if "fp32" in dtypes and "bf16-mixed" in dtypes:
            result["bf16_mixed_vs_fp32"] = precision_ratios(rows["fp32"], rows["bf16-mixed"])
    default = stamp if (args.device, dtypes) == ("cpu", ["fp32"]) else f"{stamp}-{args.device}-{'+'.join(dtypes)}"
    name = args.name or unused_name(out_dir, default)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    where = machine.get("gpu", "2 threads")
    peak = " Peak MB: GPU memory allocated (torch.cuda.max_memory_allocated)." if args.device == "cuda" else ""
    allocator = (" TRL ran with tether's freed-memory allocator setting (--trl-allocator keep)."
                 if args.trl_allocator == "keep" else "")
    if len(dtypes) == 1:
        d = dtypes[0]
        text = (f"# Benchmark {name}\n\n{what[d]}: {rates[MATMUL_DTYPE[d]] / 1e9:.1f} GFLOP/s ({where}).{peak}"
                f"{allocator}{'' if d == 'fp32' else ' ' + DESCRIBE[d] + '.'}\n\n" + markdown_table(rows[d]) + "\n")
    else:
        text = f"# Benchmark {name}\n\n{args.device}, {where}; one table per dtype.{peak}{allocator}\n"
        for d in dtypes:
            text += (f"\n## {d} ({what[d]}: {rates[MATMUL_DTYPE[d]] / 1e9:.1f} GFLOP/s)\n\n{DESCRIBE[d]}; MFU against "
                     f"the {MATMUL_DTYPE[d]} matmul rate.\n\n" + markdown_table(rows[d]) + "\n")
        if "bf16_mixed_vs_fp32" in result:
            text += ("\n## bf16-mixed vs fp32\n\nSpeed ratio = fp32 median s/step / bf16-mixed median s/step, each "
                     "library against itself (above 1: bf16-mixed is faster).\n\n"
                     + precision_table(result["bf16_mixed_vs_fp32"]) + "\n")
    split = split_table({d: rows[d] for d in dtypes})
    if split:
        text += ("\n## Where the time goes (RL workloads, medians of the timed steps)\n\nsampling = generation, "
                 "rewards and reference log-probs (tether: time/experience, or PPO's generate + score + "
                 "logprobs_values; TRL: GRPOTrainer._prepare_inputs); training = the rest of the step.\n\n"
                 + split + "\n")
    (out_dir / f"{name}.md").write_text(text)
    print(text)
    print(f"wrote {out_dir / name}.json and .md")


def time_split(result: dict) -> dict:
    """Where an RL step's time goes, from the phases the workload recorded (medians over the timed steps):
    ``time_split`` = generate / sampling / training seconds and sampling's share, ``phases`` = every recorded
    phase's median (tether: its ``time/*`` and ``generation/*`` metrics; TRL: its profiled blocks, which nest).
    Nothing for workloads without phases."""
    steps, phases = result["step_times"][2:], result.get("phases", [])[2:]
    if not phases or len(phases) != len(steps):
        return {}
    keys = sorted({k for p in phases for k in p})
    medians = {k: statistics.median(p.get(k, 0.0) for p in phases) for k in keys}
    if result["lib"] == "tether" and result["workload"] == "ppo":
        sampling = [p.get("time/generate", 0) + p.get("time/score", 0) + p.get("time/logprobs_values", 0)
                    + p.get("time/score_logprobs_values", 0) for p in phases]
        generate = [p.get("time/generate", 0) for p in phases]
    elif result["lib"] == "tether":
        sampling, generate = [p.get("time/experience", 0) for p in phases], [p.get("time/generate", 0) for p in phases]
    else:
        sampling = [p.get("_prepare_inputs", 0) for p in phases]
        generate = [p.get("transformers.generate", 0) for p in phases]
    training = [t - s for t, s in zip(steps, sampling)]
    return {"time_split": {"generate_s": statistics.median(generate), "sampling_s": statistics.median(sampling),
                           "training_s": statistics.median(training),
                           "sampling_share": statistics.median(s / t for s, t in zip(sampling, steps))},
            "phases": medians}


def precision_ratios(fp32: list[dict], mixed: list[dict]) -> list[dict]:
    """Per (model, workload, lib) in both tables: fp32 median / bf16-mixed median (above 1: bf16-mixed is faster)."""
    by_key = {(r["model"], r["workload"], r["lib"]): r for r in mixed}
    out = []
    for r in fp32:
        m = by_key.get((r["model"], r["workload"], r["lib"]))
        if m is None:
            continue
        ok = "error" not in r and "error" not in m
        out.append({"model": r["model"], "workload": r["workload"], "lib": r["lib"],
                    "fp32_median_s": r.get("median_s"), "bf16_mixed_median_s": m.get("median_s"),
                    "speed_ratio": r["median_s"] / m["median_s"] if ok else None})
    return out


def precision_table(ratios: list[dict]) -> str:
    by_key = {(r["model"], r["workload"], r["lib"]): r for r in ratios}
    lines = ["| model | workload | tether fp32 s/step | tether bf16-mixed s/step | tether fp32/bf16-mixed | "
             "TRL fp32 s/step | TRL bf16-mixed s/step | TRL fp32/bf16-mixed |", "|---|---|---|---|---|---|---|---|"]
    pairs = dict.fromkeys((r["model"], r["workload"]) for r in ratios)
    for model, workload in pairs:
        cells = []
        for lib in ("tether", "trl"):
            r = by_key.get((model, workload, lib))
            s = lambda x: "failed" if x is None else f"{x:.3f}"  # noqa: E731
            cells += (["–"] * 3 if r is None else
                      [s(r["fp32_median_s"]), s(r["bf16_mixed_median_s"]),
                       "–" if r["speed_ratio"] is None else f"{r['speed_ratio']:.2f}x"])
        lines.append(f"| {model} | {workload} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def split_table(rows_by_dtype: dict[str, list[dict]]) -> str:
    lines = []
    for dtype, rows in rows_by_dtype.items():
        for r in rows:
            if "time_split" in r:
                t = r["time_split"]
                lines.append(f"| {dtype} | {r['model']} | {r['workload']} | {r['lib']} | {r['median_s']:.3f} | "
                             f"{t['generate_s']:.3f} | {t['sampling_s']:.3f} | {t['training_s']:.3f} | "
                             f"{t['sampling_share']:.0%} |")
    if not lines:
        return ""
    return "\n".join(["| dtype | model | workload | lib | s/step | generate s | sampling s | training s | "
                      "sampling share |", "|---|---|---|---|---|---|---|---|---|", *lines])


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
