"""The roles of an RL run besides the trained policy: where each one lives (this process or a Ray actor) and which
engine samples. Shared by PPO and GRPO."""

from __future__ import annotations

from pathlib import Path

import torch

from tether.engine.runtime import frozen_reference
from tether.rollout.backends import Generator, make_generator, require_vllm
from tether.rollout.rewards import RewardSpecError, load_reward_source


def open_roles(cfg):
    """The run's Ray actors when ``placement.backend`` is ray (:class:`tether.rollout.placement.RayRoles`), else None.
    A vLLM sampler asked for in this process is checked for here, before any model is loaded."""
    placed = cfg.placement.backend == "ray" and "generation" in cfg.placement.roles
    if cfg.generation.backend == "vllm" and not placed:
        require_vllm()
    if cfg.placement.backend != "ray":
        return None
    from tether.rollout.placement import RayRoles

    return RayRoles(cfg.placement, cfg.seed)


def reward_for(cfg, tokenizer, roles):
    if roles is not None and roles.placed("reward"):
        return roles.reward(cfg.reward, cfg.model, cfg.ensemble_k, cfg.data.chat_template)
    return load_reward_source(cfg.reward, tokenizer, conservative_k=cfg.ensemble_k, chat_template=cfg.data.chat_template,
                              precision=cfg.model.precision)


def cost_for(cfg, tokenizer):
    """The cost source of a constrained run (``cfg.cost``: any reward-source spec, tether.rollout.rewards), or None
    without one. It is scored in this process, also when the reward is placed on a Ray actor. An ensemble cost is
    scored as its members' plain mean: the conservative mean − k·std that suits a reward would understate a cost."""
    if not getattr(cfg, "cost", ""):
        return None
    try:
        return load_reward_source(cfg.cost, tokenizer, conservative_k=0.0, chat_template=cfg.data.chat_template,
                                  precision=cfg.model.precision)
    except RewardSpecError as exc:
        raise RewardSpecError(f"cost: {exc}") from None


def reference_for(cfg, policy: torch.nn.Module, tokenizer, roles):
    """The frozen reference: in a Ray actor, a frozen copy here, or None (LoRA: the policy with adapters off)."""
    if roles is not None and roles.placed("reference"):
        return roles.reference(cfg.model, cfg.ref_model, tokenizer.pad_token_id)
    return frozen_reference(cfg.ref_model, policy, tokenizer.pad_token_id, cfg.model.trust_remote_code,
                            cfg.model.precision)


def generator_for(cfg, policy: torch.nn.Module, tokenizer, run_dir: Path, roles) -> Generator:
    """The sampler: in a Ray actor, a vLLM engine here, or the policy's own ``generate``."""
    if roles is not None and roles.placed("generation"):
        return roles.generator(cfg.model, cfg.generation, tokenizer.pad_token_id, policy, tokenizer, run_dir)
    return make_generator(cfg.generation, policy, run_dir, tokenizer,
                          max_model_len=cfg.data.max_length + cfg.max_new_tokens, seed=cfg.seed,
                          share_prompts=cfg.model.share_prefixes)
