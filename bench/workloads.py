"""One benchmark workload in one library, in this process; prints one JSON line of results.

    python bench/workloads.py --lib tether|trl --workload sft|rm|dpo|grpo|grpo_dapo|grpo_fixed32|ppo --model DIR --data DIR
                              --steps N [--device cpu|cuda] [--dtype fp32|bf16-mixed|bf16]

Both libraries get the same model directory, the same synthetic data, 2 threads, batch 8 per optimiser step
(RM: 8 pairs = 16 sequences), max length 128, AdamW lr 1e-5 constant, no warmup, grad-norm clip 1.0, seed 0, no
gradient checkpointing. Step times come from per-step timestamps (tether: ``metrics.jsonl``, TRL: a callback);
peak RSS from ``getrusage``; on ``--device cuda`` the peak GPU memory (``torch.cuda.max_memory_allocated``) too.

``--dtype`` (the same numeric setting in both libraries, each in its own way):

- ``fp32`` (default): fp32 weights, fp32 compute, no mixed precision (tether ``model.precision=fp32``; TRL
  ``bf16=False``).
- ``bf16-mixed``: fp32 master weights and fp32 AdamW state, matrix products in bf16 under ``torch.autocast``.
  tether: ``ModelConfig(precision="bf16-mixed")`` (``tether.models.precision``): every model it loads (policy,
  reference, reward, value) keeps fp32 weights and runs its forward under bf16 autocast, with the vocabulary head
  and scalar heads (``score``) in fp32, so logits, log-probs, KL and losses are fp32; a rollout's decoding steps
  share one bf16 cast of the weights (one autocast block around ``generate``). TRL: models loaded in fp32
  (``model_init_kwargs={"dtype": "float32"}``) and ``bf16=True`` in its config (``use_cpu=True`` on the CPU, which
  transformers requires for bf16 there): accelerate wraps every prepared model's forward (policy, and DPO's / GRPO's
  reference) in ``torch.autocast(<device>, bfloat16)`` and casts its outputs to fp32, so the head runs in bf16
  under autocast too, and each forward (each decoding step included) casts the weights to bf16 again.
- ``bf16`` (meant for a GPU): both libraries hold the weights in bf16 and train them in bf16 (no fp32 master
  copy, no autocast: tether's ``model.dtype=bfloat16``, TRL's models loaded in bf16 with ``bf16=False``).

Besides the step times, tether's GRPO/PPO runs report each iteration's phases from ``metrics.jsonl``
(``time/generate``, ``time/experience``, ``time/score``, ``time/logprobs_values``, ``time/update``, and
``generation/logprob_gap`` where the recipe records it), and TRL's GRPO runs the durations of TRL's own profiled
blocks (``trl.extras.profiling``: ``transformers.generate``, ``_prepare_inputs`` = generation + rewards +
reference log-probs, ``compute_loss``, ...) summed per step, collected here instead of going to a tracker.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
LR, BATCH, MAX_LEN, SEED = 1e-5, 8, 128, 0
DEVICE, DTYPE = "cpu", "fp32"  # set from --device / --dtype
WEIGHT_DTYPES = {"fp32": "float32", "bf16-mixed": "float32", "bf16": "bfloat16"}  # --dtype → the weights' dtype, both
TETHER_PRECISION = {"fp32": "fp32", "bf16-mixed": "bf16-mixed", "bf16": "fp32"}  # --dtype → tether's model.precision
# (bf16 keeps the spelling it had before model.precision existed: precision fp32 with model.dtype=bfloat16, which
# loads the same bf16 weights as precision=bf16 without recording the sampler's log-probs)


def length_reward(prompts=None, completions=None, responses=None, response_ids=None, **_):
    """−|len(text) − 50| / 50 on the decoded completion (both libraries' reward-function signatures)."""
    texts = completions if completions is not None else responses
    texts = [t if isinstance(t, str) else t[-1]["content"] for t in texts]
    return [-abs(len(t) - 50) / 50 for t in texts]


def tether_length_reward(prompts, responses, response_ids):
    return length_reward(responses=responses)


# ----------------------------------------------------------------------------- tether


def run_tether(workload: str, model: str, data: Path, steps: int, out: Path) -> tuple[list[float], list[dict]]:
    """The step times, and for GRPO/PPO each iteration's phases (``time/*`` and ``generation/*`` of metrics.jsonl)."""
    from tether.config import (
        DataConfig,
        GRPOConfig,
        ModelConfig,
        PPOConfig,
        PreferenceConfig,
        RewardModelConfig,
        SFTConfig,
        TrainConfig,
    )

    train = TrainConfig(learning_rate=LR, lr_scheduler="constant", warmup_ratio=0.0, max_steps=steps, batch_size=BATCH,
                        max_grad_norm=1.0, seed=SEED, num_threads=2, save_final_checkpoint=False, report_to=[],
                        eval_every=0)
    mcfg = ModelConfig(name_or_path=model, dtype=WEIGHT_DTYPES[DTYPE], precision=TETHER_PRECISION[DTYPE])

    def dcfg(name):
        return DataConfig(train_file=str(data / name), eval_fraction=0.0, max_length=MAX_LEN, chat_template="never")

    if workload == "sft":
        from tether.recipes.sft import train_sft

        train_sft(SFTConfig(run_dir=str(out), model=mcfg, data=dcfg("sft.jsonl"), train=train))
        return _tether_step_times(out, "sft"), []
    if workload == "rm":
        from tether.recipes.reward_model import train_reward_model

        train_reward_model(RewardModelConfig(run_dir=str(out), model=mcfg, data=dcfg("preferences.jsonl"), train=train))
        return _tether_step_times(out, "rm"), []
    if workload == "dpo":
        from tether.recipes.preference import train_preference

        train_preference(PreferenceConfig(run_dir=str(out), model=mcfg, data=dcfg("preferences.jsonl"), train=train,
                                          loss="dpo", kl_coef=0.1))
        return _tether_step_times(out, "dpo"), []
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if workload in ("grpo", "grpo_dapo", "grpo_fixed32"):
        from tether.recipes.grpo import train_grpo

        dapo = {"loss": "dapo", "dynamic_sampling": True} if workload == "grpo_dapo" else {}

        train_grpo(GRPOConfig(run_dir=str(out), model=mcfg, data=dcfg("prompts.jsonl"), advantage="grpo",
                              reward="workloads:tether_length_reward", group_size=4, prompts_per_iteration=2,
                              max_new_tokens=32, min_new_tokens=32 if workload == "grpo_fixed32" else 0,
                              temperature=1.0, num_iterations=steps, minibatch_size=8,
                              learning_rate=LR, kl_coef=0.04, kl_in_reward=False, loss_aggregation="token_mean",
                              kl_limit=1e9, seed=SEED, num_threads=2, report_to=[], **dapo))
        return _tether_iterations(out, "grpo")
    if workload == "ppo":
        from tether.recipes.ppo import train_ppo

        train_ppo(PPOConfig(run_dir=str(out), model=mcfg, data=dcfg("prompts.jsonl"), value_model=model,
                            reward="workloads:tether_length_reward", max_new_tokens=32, temperature=1.0,
                            num_iterations=steps, rollout_batch_size=8, minibatch_size=8, ppo_epochs=1,
                            learning_rate=LR, value_learning_rate=LR, kl_limit=1e9, seed=SEED, num_threads=2,
                            report_to=[]))
        return _tether_iterations(out, "ppo")
    raise SystemExit(f"unknown workload {workload}")


def _rows(out: Path, stage: str) -> list[dict]:
    """The stage's per-step records (evaluation and report records left out)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("stage") == stage and ("loss" in r or "time/iteration" in r)]


def _tether_iterations(out: Path, stage: str) -> tuple[list[float], list[dict]]:
    """An RL recipe's iteration times and, per iteration, its recorded phases and sampler diagnostics."""
    rows = _rows(out, stage)
    phases = [{k: v for k, v in r.items() if k.startswith(("time/", "generation/")) and isinstance(v, (int, float))}
              for r in rows]
    return [r["time/iteration"] for r in rows], phases


def _tether_step_times(out: Path, stage: str) -> list[float]:
    stamps = [r["time"] for r in _rows(out, stage)]
    start = json.loads((out / "bench_start.json").read_text())["t"] if (out / "bench_start.json").is_file() else None
    return ([stamps[0] - start] if start else []) + [b - a for a, b in zip(stamps, stamps[1:])]


# ----------------------------------------------------------------------------- TRL


def run_trl(workload: str, model: str, data: Path, steps: int, out: Path) -> tuple[list[float], list[dict]]:
    """The step times, and for GRPO the seconds of TRL's own profiled blocks summed per step."""
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

    torch.set_num_threads(2)
    weights = {"dtype": WEIGHT_DTYPES[DTYPE]}  # every model TRL loads
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.pad_token = tokenizer.eos_token
    stamps: list[float] = []
    phases: list[dict] = []  # per step: TRL's profiled block → seconds (GRPO only; its blocks nest)

    from trl.extras.profiling import ProfilingContext

    def collect(self, duration):  # instead of logging to wandb / mlflow / trackio, which this run has none of
        if stamps:  # (after the first step began; len(stamps) - 1 is the step under way)
            while len(phases) < len(stamps):
                phases.append({})
            name = self.name.split(".", 1)[-1]  # "GRPOTrainer.transformers.generate" → "transformers.generate"
            phases[len(stamps) - 1][name] = phases[len(stamps) - 1].get(name, 0.0) + duration

    ProfilingContext._log_metrics = collect

    class Stamp(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if not stamps:
                stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    common = dict(output_dir=str(out), max_steps=steps, per_device_train_batch_size=BATCH, learning_rate=LR,
                  lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, seed=SEED,
                  bf16=DTYPE == "bf16-mixed", fp16=False,  # bf16-mixed: accelerate's autocast over fp32 weights
                  gradient_checkpointing=False, report_to=[], save_strategy="no", logging_steps=1,
                  use_cpu=DEVICE == "cpu",  # (transformers refuses bf16=True on a machine without a bf16 GPU unless set)
                  dataloader_num_workers=0)
    if workload == "sft":
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(model=model, args=SFTConfig(**common, max_length=MAX_LEN, completion_only_loss=True,
                                                         packing=False, model_init_kwargs=weights),
                             train_dataset=load_dataset("json", data_files=str(data / "sft.jsonl"), split="train"),
                             processing_class=tokenizer, callbacks=[Stamp()])
    elif workload == "rm":
        from trl import RewardConfig, RewardTrainer

        rm = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1, **weights)
        rm.config.pad_token_id = tokenizer.pad_token_id
        trainer = RewardTrainer(model=rm, args=RewardConfig(**common, max_length=MAX_LEN),
                                train_dataset=load_dataset("json", data_files=str(data / "preferences.jsonl"),
                                                           split="train"),
                                processing_class=tokenizer, callbacks=[Stamp()])
    elif workload == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model=model, args=DPOConfig(**common, max_length=MAX_LEN, beta=0.1, loss_type="sigmoid",
                                                                 model_init_kwargs=weights),
                             train_dataset=load_dataset("json", data_files=str(data / "preferences.jsonl"),
                                                        split="train"),
                             processing_class=tokenizer, callbacks=[Stamp()])
    elif workload in ("grpo", "grpo_dapo", "grpo_fixed32"):  # (loss_type="dapo" in every row: TRL's default)
        from trl import GRPOConfig, GRPOTrainer

        fixed = {"generation_kwargs": {"min_new_tokens": 32}} if workload == "grpo_fixed32" else {}
        policy = AutoModelForCausalLM.from_pretrained(model, **weights)
        trainer = GRPOTrainer(model=policy, reward_funcs=length_reward,
                              args=GRPOConfig(**common, num_generations=4, max_completion_length=32, temperature=1.0,
                                              top_k=0, top_p=1.0, beta=0.04, loss_type="dapo", scale_rewards="group",
                                              generation_batch_size=8, model_init_kwargs=weights, **fixed),
                              train_dataset=load_dataset("json", data_files=str(data / "prompts.jsonl"), split="train"),
                              processing_class=tokenizer, callbacks=[Stamp()])
    else:
        raise SystemExit(f"TRL has no '{workload}' workload here")
    trainer.train()
    steps_done = max(0, len(stamps) - 1)
    return ([b - a for a, b in zip(stamps, stamps[1:])],
            [phases[i] if i < len(phases) else {} for i in range(steps_done)] if any(phases) else [])


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("lib", "workload", "model", "data"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=tuple(WEIGHT_DTYPES), default="fp32")
    args = parser.parse_args()
    global DEVICE, DTYPE
    DEVICE, DTYPE = args.device, args.dtype
    os.environ["TETHER_DEVICE"] = args.device
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    with tempfile.TemporaryDirectory(prefix=f"bench-{args.lib}-{args.workload}-") as tmp:
        out = Path(tmp)
        (out / "bench_start.json").write_text(json.dumps({"t": time.time()}))
        runner = run_tether if args.lib == "tether" else run_trl
        started = time.time()
        times, phases = runner(args.workload, args.model, Path(args.data), args.steps, out)
        total = time.time() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"lib": args.lib, "workload": args.workload, "model": args.model, "device": args.device,
              "dtype": args.dtype, "step_times": times, "total_seconds": total, "peak_rss_mb": peak_kb / 1024}
    if any(phases):
        result["phases"] = phases
    if args.device == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("BENCH " + json.dumps(result))


if __name__ == "__main__":
    main()
