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
