"""Shared test helpers (imported as tests.helpers; pytest puts the repository root on sys.path)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

TINY_OVERRIDES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "head_dim": 16}


def tiny_model_config(**extra):
    """SmolLM2's tokenizer and architecture shrunk to 2 layers x 64 wide, randomly initialised."""
    from tether.config import ModelConfig

    return ModelConfig(name_or_path="embedded", random_init=True, config_overrides=dict(TINY_OVERRIDES), **extra)



def eval_with_fixed_answers(root: Path, names: list[str], prompt_rows: list[dict], answers: list[list[str]],
                            **settings):
    """`tether eval` over tiny random models saved as ``root/<name>`` (one per name, the first the reference),
    on ``prompt_rows`` (written to ``root/prompts.jsonl``), with each model's answers fixed to ``answers[i]`` (the
    decoding of its one batch is replaced); ``settings`` are EvalConfig's (``run_dir`` defaults to ``root/out``).
    Returns the summary."""
    import json

    import pytest

    import tether.rollout.sampling as sampling
    from tether.config import DataConfig, EvalConfig
    from tether.models.loading import load_causal_lm, load_tokenizer, save_model
    from tether.recipes.evaluate import run_eval

    tokenizer = load_tokenizer("embedded")
    dirs = [str(save_model(load_causal_lm(tiny_model_config(), seed=seed, pad_token_id=tokenizer.pad_token_id),
                           tokenizer, root / name, {"recipe": "test"})) for seed, name in enumerate(names)]
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(row) + "\n" for row in prompt_rows))
    calls = []

    def fixed_answers(tok, rollout):
        calls.append(len(calls))
        return answers[len(calls) - 1][:rollout.response_ids.shape[0]]

    patch = pytest.MonkeyPatch()
    patch.setattr(sampling, "decode_responses", fixed_answers)
    try:
        cfg = EvalConfig(**{"run_dir": str(root / "out"), "models": dirs, "gold": "", "max_prompts": 0,
                            "max_new_tokens": 3, "batch_size": len(prompt_rows), "alignment_tax": False,
                            "data": DataConfig(train_file=str(prompts), max_length=64), **settings})
        summary = run_eval(cfg)
    finally:
        patch.undo()
    assert len(calls) == len(names)  # one batch per model
    return summary


def crash_training_rollout(monkeypatch, rollout_size: int, at: int = 3) -> None:
    """Make the ``at``-th training rollout's scoring raise KeyboardInterrupt (a kill in the middle of that
    iteration). Rollouts of another size (held-out batches) are scored as usual."""
    from tether.rollout import rewards as reward_module

    calls = {"n": 0}
    original = reward_module.FunctionSource.score

    def crash(self, rollout, prompts, responses, rows=None):
        if len(prompts) == rollout_size:
            calls["n"] += 1
            if calls["n"] == at:
                raise KeyboardInterrupt
        return original(self, rollout, prompts, responses, rows)

    monkeypatch.setattr(reward_module.FunctionSource, "score", crash)


def trained_advantages(monkeypatch) -> list:
    """Record the advantages every GRPO update trains on (a clone per iteration, in order); the update runs as usual."""
    import tether.recipes.grpo as grpo

    trained = []
    update = grpo.grpo_update

    def spy(cfg, policy, optimizer, experience, *args, **kwargs):
        trained.append(experience.advantages.clone())
        return update(cfg, policy, optimizer, experience, *args, **kwargs)

    monkeypatch.setattr(grpo, "grpo_update", spy)
    return trained


def have_chromium() -> bool:
    import shutil

    return shutil.which("chromium") is not None and shutil.which("chromedriver") is not None


def chromium_driver(*flags: str):
    """Headless Debian Chromium through selenium (browser console logs kept for error checks)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", *flags):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
