"""The engine: the machinery every recipe runs on, below the recipes and above the components.

- :mod:`tether.engine.runtime`: run-directory setup (seeding, threads, precision, metric sinks, ``config.yaml``),
  held-out splits, prompt loading, the frozen reference.
- :mod:`tether.engine.loop`: the supervised optimisation loop (SFT, reward model, DPO family).
- :mod:`tether.engine.rl`: the online-RL outer loop that PPO and GRPO share (resume, the held-out monitor and its
  alarm, the KL limit, signals, periodic and final checkpoints).

It may import every component layer (algos, models, data, rollout, eval, feedback, utils) and never
``tether.recipes`` or ``tether.cli``.
"""
