"""PPO on a tiny model: the score rises under the KL leash, β adapts, the KL guard stops a runaway run."""

import json
import math

import pytest
import torch
from transformers import AutoConfig

from tests.helpers import EXAMPLES, crash_training_rollout, tiny_model_config
from tether.config import DataConfig, HeldOutConfig, ModelConfig, PPOConfig, SFTConfig, TrainConfig
from tether.recipes.ppo import train_ppo
from tether.recipes.sft import train_sft
from tether.rollout.generation import response_mask_from_ids
from tether.utils.logging import read_metrics

DATA = EXAMPLES / "data"


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("sft")
    cfg = SFTConfig(run_dir=str(run), model=tiny_model_config(),
                    data=DataConfig(train_file=str(DATA / "sft.jsonl"), max_length=256, eval_fraction=0.0),
                    train=TrainConfig(learning_rate=3e-3, max_steps=60, batch_size=8, save_final_checkpoint=False))
    return str(train_sft(cfg).model_dir)


def _ppo(run_dir, sft_dir, **extra):
    base = dict(run_dir=str(run_dir), model=ModelConfig(name_or_path=sft_dir), reward="tether.tasks.toy:period_density",
                data=DataConfig(train_file=str(DATA / "prompts.jsonl")), max_new_tokens=12, num_iterations=14,
                rollout_batch_size=16, minibatch_size=8, learning_rate=2e-3, value_learning_rate=1e-4)
    return PPOConfig(**{**base, **extra})


def test_response_mask_keeps_the_first_eos_even_when_pad_is_eos():
    eos = 2
    ids = torch.tensor([[5, 6, eos, eos, eos], [7, eos, 9, eos, eos], [5, 6, 7, 8, 9]])
    mask, ended = response_mask_from_ids(ids, eos)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert ended.tolist() == [True, True, False]


def test_ppo_raises_the_score_under_the_kl_leash(tmp_path, sft_dir):
    """24 iterations with the adaptive controller (target 3 nats, a short horizon so it acts within the run):
    the score rises by far while KL stays within a small factor of the target and β follows KL."""
    target = 3.0
    result = train_ppo(_ppo(tmp_path, sft_dir, num_iterations=24, kl_coef=0.2, target_kl=target, kl_horizon=16))
    rows = read_metrics(tmp_path, "ppo")
    assert len(rows) == 24 and result.stopped_early is None
    scores = [r["reward/score_mean"] for r in rows]
    kls = [r["objective/kl"] for r in rows]
    betas = [r["objective/kl_coef"] for r in rows]
    assert sum(scores[-4:]) / 4 > sum(scores[:4]) / 4 + 3.0  # period_density: ~0.05 at the start
    assert all(0 < kl < 4 * target for kl in kls[1:])  # (without a leash it passes 20: see the drift test)
    assert 0.5 * target < sum(kls[-8:]) / 8 < 3 * target
    # β follows the KL: down while KL is under the target, then up once the policy pushes past it
    assert min(betas) < 0.15 and betas[-1] > 2 * min(betas) and betas.index(min(betas)) < 20
    for key in ("policy/clip_frac", "policy/approx_kl", "value/loss", "value/explained_variance",
                "objective/entropy", "response/eos_frac", "time/generate"):
        assert key in rows[-1]
    # the controller's state (after its last update) is in the final checkpoint and in tether.json
    state = json.loads((tmp_path / "checkpoints" / "ppo" / "step-24" / "trainer_state.json").read_text())
    final_beta = json.loads((result.model_dir / "tether.json").read_text())["final_kl_coef"]
    assert state["trainer"]["kl_controller"]["value"] == final_beta != rows[-1]["objective/kl_coef"]


def test_kl_guard_stops_a_runaway_policy(tmp_path, sft_dir):
    result = train_ppo(_ppo(tmp_path, sft_dir, learning_rate=3e-3, kl_limit=0.5, num_iterations=14))
    assert result.stopped_early is not None and "exceeded kl_limit=0.5" in result.stopped_early
    assert result.iterations < 14
    assert json.loads((result.model_dir / "tether.json").read_text())["stopped_early"] == result.stopped_early


@pytest.mark.parametrize("advantage", ["grpo", "rloo", "reinforce_pp"])
def test_critic_free_estimators_raise_the_score(tmp_path, sft_dir, advantage):
    from tether.config import GRPOConfig
    from tether.recipes.grpo import train_grpo

    cfg = GRPOConfig(run_dir=str(tmp_path), model=ModelConfig(name_or_path=sft_dir), advantage=advantage,
                     reward="tether.tasks.toy:period_density", data=DataConfig(train_file=str(DATA / "prompts.jsonl")),
                     group_size=4, prompts_per_iteration=4, max_new_tokens=12, num_iterations=12,
                     learning_rate=2e-3, kl_limit=50.0)
    result = train_grpo(cfg)
    scores = [r["reward/score_mean"] for r in read_metrics(tmp_path, "grpo")]
    assert result.iterations == 12 and len(scores) == 12
    assert sum(scores[-4:]) / 4 > sum(scores[:4]) / 4 + 0.3


@pytest.mark.parametrize("loss, clip", [("dapo", {}), ("cispo", {"clip_range_high": 0.28}),
                                        ("gspo", {"clip_range": 3e-4, "clip_range_high": 4e-4}),
                                        ("gmpo", {"clip_range": 0.4}), ("sapo", {})])
def test_critic_free_training_with_each_registered_policy_loss_raises_the_score(tmp_path, sft_dir, loss, clip):
    from tether.config import GRPOConfig
    from tether.recipes.grpo import train_grpo

    cfg = GRPOConfig(run_dir=str(tmp_path), model=ModelConfig(name_or_path=sft_dir), loss=loss, **clip,
                     reward="tether.tasks.toy:period_density", data=DataConfig(train_file=str(DATA / "prompts.jsonl")),
                     group_size=4, prompts_per_iteration=4, max_new_tokens=12, num_iterations=12, minibatch_size=8,
                     learning_rate=2e-3, kl_limit=50.0)
    train_grpo(cfg)
    rows = read_metrics(tmp_path, "grpo")
    scores = [r["reward/score_mean"] for r in rows]
    assert sum(scores[-4:]) / 4 > sum(scores[:4]) / 4 + 0.3
    if loss != "sapo":  # (sapo has no clip; its clip_frac counts gates below one half, which needs ρ beyond ~2.8)
        assert any(r["policy/clip_frac"] > 0 for r in rows)  # the second minibatch of each iteration is off-policy


@pytest.mark.parametrize("recipe", ["ppo", "grpo"])
def test_a_loss_gets_its_own_options_from_the_config(tmp_path, sft_dir, monkeypatch, recipe):
    """loss=sapo reads sapo_tau_pos / sapo_tau_neg: both recipes pass the config's values to it by name. Catches:
    a recipe calling the loss without its options (it would run silently at the defaults)."""
    from tether.algos.losses import ppo as losses
    from tether.config import GRPOConfig
    from tether.recipes.grpo import train_grpo

    seen = []

    def spy(*args, **kwargs):
        seen.append((kwargs.get("sapo_tau_pos"), kwargs.get("sapo_tau_neg")))
        return losses.sapo_loss(*args, **kwargs)

    monkeypatch.setitem(losses.POLICY_LOSSES, "sapo", losses.PolicyLoss(spy, aggregation="token_mean",
                                                                         options=("sapo_tau_pos", "sapo_tau_neg")))
    options = dict(loss="sapo", sapo_tau_pos=0.5, sapo_tau_neg=2.0, num_iterations=1)
    if recipe == "ppo":
        train_ppo(_ppo(tmp_path, sft_dir, **options))
    else:
        train_grpo(GRPOConfig(run_dir=str(tmp_path), model=ModelConfig(name_or_path=sft_dir), group_size=4,
                              prompts_per_iteration=2, max_new_tokens=8, minibatch_size=8,
                              reward="tether.tasks.toy:period_density",
                              data=DataConfig(train_file=str(DATA / "prompts.jsonl")), **options))
    assert seen and set(seen) == {(0.5, 2.0)}


def test_ppo_refuses_a_sequence_level_loss_before_loading_anything(tmp_path, sft_dir):
    from tether.errors import ConfigError
    from tether.recipes.ppo import train_ppo

    with pytest.raises(ConfigError, match="loss=gspo is defined on one advantage per response"):
        train_ppo(_ppo(tmp_path, sft_dir, loss="gspo"))
    with pytest.raises(ConfigError, match="loss: unknown policy loss 'ppo'"):
        train_ppo(_ppo(tmp_path, sft_dir, loss="ppo"))
    assert not any(tmp_path.iterdir())  # nothing written


def test_best_of_n_beats_a_single_sample_and_reports_its_kl(tmp_path, sft_dir):
    import math
    import statistics

    from tether.config import BestOfNConfig
    from tether.recipes.best_of_n import run_best_of_n

    out = tmp_path / "bon.jsonl"
    summary = run_best_of_n(BestOfNConfig(model=ModelConfig(name_or_path=sft_dir), reward="tether.tasks.toy:period_density",
                                          data=DataConfig(train_file=str(DATA / "prompts.jsonl")), output=str(out),
                                          n=4, max_new_tokens=12))
    from tether.tasks.toy import period_density

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 30 and all(r["score"] == max(r["scores"]) and len(r["scores"]) == 4 for r in rows)
    # the kept response is the one that scored best: the reward function itself, on the saved text
    assert [r["score"] for r in rows] == pytest.approx(
        period_density([r["prompt"] for r in rows], [r["response"] for r in rows], []), abs=1e-6)
    # the maximum of n scores is at least pstdev/√(n−1) above their mean (equality: n−1 tied high, one low), on
    # every prompt; a pick that ignores the scores (e.g. always sample 0) is on average at the mean and fails
    assert all(r["score"] - statistics.fmean(r["scores"]) >= statistics.pstdev(r["scores"]) / math.sqrt(3) - 1e-9
               for r in rows)
    assert any(statistics.pstdev(r["scores"]) > 0 for r in rows)  # (so the line above is not 0 ≥ 0 everywhere)
    assert summary["score_best_mean"] == pytest.approx(statistics.fmean(r["score"] for r in rows))
    assert summary["score_sample_mean"] == pytest.approx(statistics.fmean(x for r in rows for x in r["scores"]))
    assert summary["kl_best_of_n"] == pytest.approx(math.log(4) - 3 / 4)


def test_rejection_sampling_rounds_raise_the_sample_reward(tmp_path, sft_dir):
    from tether.config import RejectionSamplingConfig
    from tether.recipes.best_of_n import run_rejection_sampling

    cfg = RejectionSamplingConfig(run_dir=str(tmp_path), model=ModelConfig(name_or_path=sft_dir),
                                  reward="tether.tasks.toy:period_density",
                                  data=DataConfig(train_file=str(DATA / "prompts.jsonl")), rounds=3, n=4,
                                  max_new_tokens=12,
                                  train=TrainConfig(learning_rate=1e-3, num_epochs=2, batch_size=8,
                                                    save_final_checkpoint=False))
    import math
    import statistics

    from tether.tasks.toy import period_density

    result = run_rejection_sampling(cfg)
    assert len(result.rounds) == 3 and result.model_dir == tmp_path / "round-3" / "model"
    for r in range(1, 4):
        rows = [json.loads(line) for line in (tmp_path / f"round-{r}" / "best.jsonl").read_text().splitlines()]
        # each prompt's fine-tuning target is the best of its 4 samples, as the reward function scores its text;
        # the maximum of n scores is at least pstdev/√(n−1) above their mean (a pick that ignores the scores, e.g.
        # always sample 0, sits at the mean on average and fails on some prompt)
        assert [row["score"] for row in rows] == pytest.approx(
            period_density([], [row["completion"] for row in rows], []), abs=1e-6)
        assert all(row["score"] == max(row["scores"]) and len(row["scores"]) == 4 for row in rows)
        assert all(row["score"] - statistics.fmean(row["scores"]) >= statistics.pstdev(row["scores"]) / math.sqrt(3)
                   - 1e-9 for row in rows)
        assert any(statistics.pstdev(row["scores"]) > 0 for row in rows)  # (not 0 ≥ 0 on every prompt)
    # each round samples from the previous round's fine-tuned model. (Whether the mean sample score then rises is
    # not asserted: on this tiny model it is a coin toss between trajectories. Measured over three seeds, round 3
    # minus round 1 was +0.24, +0.035 and +0.07 with selection and +0.024, −0.096 and +0.05 without; with longer
    # fine-tuning, +0.13 and −0.06. The selection itself is asserted above on every prompt.)
    assert [r["model"] for r in result.rounds] == [str(tmp_path / f"round-{r}" / "model") for r in (1, 2, 3)]
    assert result.rounds[1]["reward/sample_mean"] != result.rounds[0]["reward/sample_mean"]  # the policy moved


def test_without_a_leash_the_policy_drifts_further(tmp_path, sft_dir):
    leashed = train_ppo(_ppo(tmp_path / "leash", sft_dir, kl_coef=0.5, adaptive_kl=True, target_kl=1.0))
    free = train_ppo(_ppo(tmp_path / "free", sft_dir, kl_coef=0.0, adaptive_kl=False))
    kl = lambda result: sum(h["objective/kl"] for h in result.history[-4:]) / 4  # noqa: E731
    assert kl(free) > kl(leashed) + 0.5


def test_resumed_ppo_reproduces_the_uninterrupted_run(tmp_path, sft_dir, monkeypatch):

    # the held-out evaluation (8 prompts, every iteration) runs too: its monitor state must resume exactly
    heldout = HeldOutConfig(gold="tether.tasks.toy:moderate_periods", prompts_file=str(DATA / "prompts.jsonl"),
                            max_prompts=8, every=1)
    full = train_ppo(_ppo(tmp_path / "full", sft_dir, num_iterations=4, heldout=heldout))
    # killed during iteration 3 (training rollouts have 16 responses, held-out ones 8), after the checkpoint at 2
    crash_training_rollout(monkeypatch, rollout_size=16, at=3)
    with pytest.raises(KeyboardInterrupt):
        train_ppo(_ppo(tmp_path / "cut", sft_dir, num_iterations=4, save_every=2, heldout=heldout))
    monkeypatch.undo()  # the same command again, uninterrupted
    resumed = train_ppo(_ppo(tmp_path / "cut", sft_dir, num_iterations=4, save_every=2, heldout=heldout))
    assert [h["reward/score_mean"] for h in resumed.history] == pytest.approx(
        [h["reward/score_mean"] for h in full.history[2:]], abs=1e-5)
    for key in ("objective/kl", "objective/kl_coef", "reward/normalized_mean", "policy/approx_kl", "value/loss",
                "heldout/gold_mean", "heldout/proxy_mean", "heldout/kl"):
        assert [h[key] for h in resumed.history] == pytest.approx([h[key] for h in full.history[2:]], abs=1e-5), key
    full_curve = json.loads((tmp_path / "full" / "ppo_heldout.json").read_text())
    cut_curve = json.loads((tmp_path / "cut" / "ppo_heldout.json").read_text())
    assert [p["iteration"] for p in cut_curve["points"]] == [0, 1, 2, 3, 4]
    assert [p["gold"] for p in cut_curve["points"]] == pytest.approx([p["gold"] for p in full_curve["points"]], abs=1e-6)


def test_ppo_with_lora_uses_the_adapter_free_base_as_reference(tmp_path, sft_dir):
    model = ModelConfig(name_or_path=sft_dir)
    model.lora.enabled = True
    model.lora.r = 4
    result = train_ppo(_ppo(tmp_path, sft_dir, model=model, num_iterations=2))
    # LoRA B starts at zero: on the first rollout the policy equals the reference exactly
    assert result.history[0]["objective/kl"] == pytest.approx(0.0, abs=1e-5)
    assert result.history[1]["objective/kl"] != 0.0
    from transformers import AutoModelForCausalLM

    assert not any("lora" in n for n, _ in AutoModelForCausalLM.from_pretrained(result.model_dir).named_parameters())


def test_hacking_alarm_fires_when_the_proxy_rises_and_gold_falls(tmp_path, sft_dir):
    # proxy: period density; gold: periods help up to a density of 0.5, then hurt (tether.tasks.toy:moderate_periods)
    # The run stops at the alarm, so a long budget costs nothing once it fires: when the policy discovers periods
    # varies with the float trajectory (the alarm fired at iterations 10, 10 and 12 here at seeds 42, 7 and 123, at
    # 14 on another CPU at seed 42), and 40 iterations leave room for every trajectory seen, with ~3x margin.
    heldout = HeldOutConfig(gold="tether.tasks.toy:moderate_periods", prompts_file=str(DATA / "prompts.jsonl"),
                            max_prompts=16, every=2, stop_on_alarm=True, keep_best=True)
    result = train_ppo(_ppo(tmp_path, sft_dir, heldout=heldout, num_iterations=40))
    (alarm,) = result.alarms
    assert alarm["rule"] == "proxy_up_gold_down" and result.stopped_early.startswith("reward-hacking alarm")
    assert result.iterations == alarm["iteration"] < 40
    curve = json.loads((tmp_path / "ppo_heldout.json").read_text())
    points = {p["iteration"]: p for p in curve["points"]}
    assert points[0]["kl"] == 0.0  # the first point is the reference itself
    best = max(curve["points"], key=lambda p: p["gold"])
    last = curve["points"][-1]
    assert last["proxy"] > best["proxy"] and last["gold"] < best["gold"] - 0.1
    if best["iteration"] > 0:  # keep_best saved the policy of the best point (none beat the reference: none saved)
        assert json.loads((tmp_path / "ppo-best" / "tether.json").read_text())["heldout_gold"] == best["gold"]
    else:
        assert not (tmp_path / "ppo-best").exists()
    rows = read_metrics(tmp_path, "ppo")
    assert [r["heldout/gold_mean"] for r in rows if "heldout/gold_mean" in r] == [p["gold"] for p in curve["points"]]


def test_hacking_alarm_stays_silent_when_gold_rises_with_the_proxy(tmp_path, sft_dir):
    heldout = HeldOutConfig(gold="tether.tasks.toy:period_density", prompts_file=str(DATA / "prompts.jsonl"),
                            max_prompts=16, every=2, keep_best=True)
    result = train_ppo(_ppo(tmp_path, sft_dir, heldout=heldout))
    assert result.alarms == [] and result.iterations == 14
    curve = json.loads((tmp_path / "ppo_heldout.json").read_text())
    assert curve["points"][-1]["gold"] > curve["points"][0]["gold"] + 0.3
    # keep_best: the policy of the (first) best held-out point, which beat the reference
    best = max(curve["points"], key=lambda p: p["gold"])
    saved = json.loads((tmp_path / "ppo-best" / "tether.json").read_text())
    assert (saved["iteration"], saved["heldout_gold"]) == (best["iteration"], best["gold"]) and best["iteration"] > 0


def test_grpo_single_step_reuses_the_training_forward_as_old_logprobs(tmp_path, sft_dir, monkeypatch):
    from tether.config import GRPOConfig
    from tether.recipes import grpo as grpo_module

    def run(name):
        cfg = GRPOConfig(run_dir=str(tmp_path / name), model=ModelConfig(name_or_path=sft_dir),
                         reward="tether.tasks.toy:period_density", data=DataConfig(train_file=str(DATA / "prompts.jsonl")),
                         group_size=4, prompts_per_iteration=4, minibatch_size=16, max_new_tokens=12, num_iterations=3,
                         learning_rate=2e-3, kl_limit=50.0)
        return grpo_module.train_grpo(cfg).history

    deferred = run("deferred")
    monkeypatch.setattr(grpo_module, "single_on_policy_step", lambda cfg, batch, dist=None: False)
    explicit = run("explicit")  # the separate no-grad forward for the old log-probs
    for key in ("reward/score_mean", "objective/kl", "policy/loss", "policy/kl_loss", "policy/clip_frac",
                "objective/entropy"):
        assert [h[key] for h in deferred] == pytest.approx([h[key] for h in explicit], abs=1e-5), key
    assert deferred[-1]["objective/kl"] > 0
    vocab = AutoConfig.from_pretrained(sft_dir).vocab_size  # nats per token, in (0, log V]
    assert all(0 < h["objective/entropy"] <= math.log(vocab) + 1e-6 for h in deferred)


def test_ppo_single_step_reuses_the_training_forward_for_old_logprobs_and_values(tmp_path, sft_dir, monkeypatch):
    from tether.recipes import ppo as ppo_module

    value_passes = {"n": 0}
    original = ppo_module.token_values

    def counted(*args, **kwargs):
        value_passes["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(ppo_module, "token_values", counted)

    def run(name):
        value_passes["n"] = 0
        cfg = _ppo(tmp_path / name, sft_dir, num_iterations=3, ppo_epochs=1, minibatch_size=16)
        return train_ppo(cfg).history, value_passes["n"]

    deferred, deferred_passes = run("deferred")
    monkeypatch.setattr(ppo_module, "single_on_policy_step", lambda cfg, batch, dist=None: False)
    explicit, explicit_passes = run("explicit")  # the separate no-grad forwards for the old log-probs and values
    assert (deferred_passes, explicit_passes) == (3, 6)  # one value forward per iteration instead of two
    for key in ("reward/score_mean", "objective/kl", "objective/rlhf_reward", "policy/loss", "policy/clip_frac",
                "value/loss", "value/explained_variance", "objective/entropy"):
        assert [h[key] for h in deferred] == pytest.approx([h[key] for h in explicit], abs=1e-5), key
    assert deferred[-1]["objective/kl"] > 0 and deferred[-1]["value/loss"] > 0


def test_approx_kl_stop_takes_no_step_past_the_threshold_and_ends_the_update(tmp_path, sft_dir, monkeypatch):
    """4 epochs × 2 minibatches = 8 steps per update. With approx_kl_stop the first minibatch (the policy that
    sampled, approx KL ~1e-7 from layout rounding) steps; the next one has moved (measured ~1e-2 after one step at
    lr 2e-3, 10x the threshold) and ends the update without a step: 1 step, against 8 without the stop.
    Catches a stop that still steps on the offending minibatch (2), one that only ends the epoch (5), none (8)."""
    from tether.recipes import ppo as ppo_module

    steps = []
    original = ppo_module.adamw

    def counting_adamw(*args, **kwargs):
        optimizer = original(*args, **kwargs)
        step = optimizer.step
        optimizer.step = lambda *a, **k: (steps.append(1), step(*a, **k))[1]
        return optimizer

    monkeypatch.setattr(ppo_module, "adamw", counting_adamw)
    stopped = train_ppo(_ppo(tmp_path / "stop", sft_dir, num_iterations=1, ppo_epochs=4, approx_kl_stop=1e-3))
    assert len(steps) == 1
    row = stopped.history[0]
    assert row["policy/early_stopped"] == 1.0 and row["policy/update_steps"] == 1.0
    assert row["policy/approx_kl"] > 1e-3 / 2  # mean of the two forwards' KL: ~0 and > 1e-3
    steps.clear()
    free = train_ppo(_ppo(tmp_path / "free", sft_dir, num_iterations=1, ppo_epochs=4))
    assert len(steps) == 8 and free.history[0]["policy/early_stopped"] == 0.0


def test_ppo_with_an_ensemble_reward_starts_its_value_model_from_the_first_member(tmp_path, sft_dir, monkeypatch):
    from tether.config import RewardModelConfig
    from tether.recipes import ppo as ppo_module
    from tether.recipes.reward_model import train_reward_model

    ensemble = train_reward_model(RewardModelConfig(
        run_dir=str(tmp_path), model=ModelConfig(name_or_path=sft_dir), ensemble_size=2,
        data=DataConfig(train_file=str(DATA / "preferences.jsonl"), max_length=256, eval_fraction=0.0),
        train=TrainConfig(max_steps=2, batch_size=8, save_final_checkpoint=False))).model_dir
    assert (ensemble / "ensemble.json").is_file()
    value_inits = []
    original = ppo_module.load_reward_model
    monkeypatch.setattr(ppo_module, "load_reward_model",
                        lambda cfg, **kw: (value_inits.append(cfg.name_or_path), original(cfg, **kw))[1])
    result = train_ppo(_ppo(tmp_path, sft_dir, reward=str(ensemble), num_iterations=2))
    assert result.iterations == 2 and value_inits == [str(ensemble / "member-0")]


def test_grpo_adds_the_soft_overlong_penalty_to_the_scores(tmp_path, sft_dir):
    from tether.config import GRPOConfig
    from tether.recipes.grpo import train_grpo

    # a budget of 6 tokens, all of it the buffer: a response of L tokens gets −0.5·L/6, so the batch's mean penalty
    # is −0.5·(mean length)/6, and the proxy (the score the advantages see) is the raw score plus it
    cfg = GRPOConfig(run_dir=str(tmp_path), model=ModelConfig(name_or_path=sft_dir), overlong_buffer=6,
                     overlong_penalty=0.5, reward="tether.tasks.toy:period_density",
                     data=DataConfig(train_file=str(DATA / "prompts.jsonl")), group_size=2, prompts_per_iteration=2,
                     max_new_tokens=6, num_iterations=1)
    train_grpo(cfg)
    row = read_metrics(tmp_path, "grpo")[0]
    assert row["reward/overlong_penalty_mean"] == pytest.approx(-0.5 * row["response/length_mean"] / 6)
    assert row["reward/proxy_mean"] == pytest.approx(row["reward/score_mean"] + row["reward/overlong_penalty_mean"])
    assert row["reward/overlong_penalty_mean"] < 0
