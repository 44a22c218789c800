"""The reward-vs-KL frontier: the best-of-N curve by hand, and a tiny sweep end to end."""

import json
import math

import pytest

from tests.helpers import EXAMPLES, tiny_model_config
from tether.config import DataConfig, FrontierConfig, PPOConfig, PreferenceConfig, TrainConfig
from tether.recipes.frontier import best_of_n_curve, gao_fits, run_frontier


def test_best_of_n_curve_by_hand():
    proxy = [[1.0, 3.0, 2.0, 5.0], [4.0, 0.0, 6.0, 1.0]]
    gold = [[0.0, 1.0, 2.0, -1.0], [1.0, 0.0, -2.0, 3.0]]
    points = best_of_n_curve(proxy, gold, [1, 2, 4])
    # N=1 picks sample 0 of each prompt; N=2 picks samples 1 and 0; N=4 picks samples 3 and 2
    assert [p["proxy"] for p in points] == [2.5, 3.5, 5.5]
    assert [p["gold"] for p in points] == [0.5, 1.0, -1.5]
    assert [p["kl"] for p in points] == pytest.approx([0.0, math.log(2) - 0.5, math.log(4) - 0.75])


def test_fits_are_of_the_gains_over_the_start():
    """Best-of-N points 1.0 + d(1.5 − 0.5d) at d = 1, 2, 3 over a start of 1.0 give back α = 1.5, β = 0.5 (gold);
    a method with one point at KL > 0 gets no fit."""
    points = [{"method": "best-of-n", "kl": kl, "gold": 1.0 + g, "proxy": 2.0 + kl} for kl, g in
              [(0.0, 0.0), (1.0, 1.0), (4.0, 1.0), (9.0, 0.0)]]
    points.append({"method": "ppo", "kl": 2.0, "gold": 1.5, "proxy": 3.0})
    fits = {(f["method"], f["reward"]): f for f in gao_fits(points, {"gold": 1.0, "proxy": 2.0})}
    assert set(fits) == {("best-of-n", "gold"), ("best-of-n", "proxy")}
    gold = fits["best-of-n", "gold"]
    assert (gold["alpha"], gold["beta"], gold["peak_kl"]) == pytest.approx((1.5, 0.5, 2.25))
    assert gold["formula"] == "d(α − βd)" and gold["n_points"] == 3
    # proxy gains = KL = d²: α·d − β·d² with α = 0, β = −1, a curve that never turns down
    assert fits["best-of-n", "proxy"]["peak_kl"] is None


def test_tiny_frontier_sweep(tmp_path):
    ppo = PPOConfig(model=tiny_model_config(), reward="tether.tasks.toy:period_density",
                    data=DataConfig(train_file=str(EXAMPLES / "data" / "prompts.jsonl"), max_length=128),
                    max_new_tokens=10, num_iterations=6, rollout_batch_size=8, minibatch_size=8, learning_rate=3e-3,
                    value_learning_rate=1e-4, kl_limit=1000.0)
    dpo = PreferenceConfig(data=DataConfig(train_file=str(EXAMPLES / "data" / "preferences.jsonl"), max_length=128),
                           train=TrainConfig(learning_rate=1e-3, max_steps=3, batch_size=4, report_to=[]))
    cfg = FrontierConfig(run_dir=str(tmp_path), ppo=ppo, kl_coefs=[1.0, 0.0], ns=[1, 2, 4],
                         prompts_file=str(EXAMPLES / "data" / "prompts.jsonl"), max_prompts=8,
                         gold="tether.tasks.toy:moderate_periods", dpo=dpo, dpo_kl_coefs=[0.5, 0.1])
    result = run_frontier(cfg)
    dpo_points = {p["setting"]: p for p in result["points"] if p["method"] == "dpo"}
    assert set(dpo_points) == {"beta=0.5", "beta=0.1"}
    for beta in (0.5, 0.1):  # trained from the frontier's start with its own β, measured like the PPO points
        run = tmp_path / f"dpo-beta-{beta}"
        assert dpo_points[f"beta={beta}"]["model"] == str(run / "dpo")
        assert dpo_points[f"beta={beta}"]["kl"] > 0
        assert json.loads((run / "dpo" / "tether.json").read_text())["config"]["kl_coef"] == beta
    assert result["start"]["gold"] == result["points"][0]["gold"]  # best-of-1: the start's own answers
    assert {(f["method"], f["reward"]) for f in result["fits"]} == {(m, r) for m in ("best-of-n", "ppo", "dpo")
                                                                    for r in ("gold", "proxy")}
    assert "fit" in (tmp_path / "report.html").read_text()
    bon = [p for p in result["points"] if p["method"] == "best-of-n"]
    ppo_points = {p["setting"]: p for p in result["points"] if p["method"] == "ppo"}
    assert bon[1]["proxy"] >= bon[0]["proxy"] and bon[0]["kl"] == 0.0
    # each PPO point trained under its own fixed β (adaptive control off), from the same start with the same seed:
    # the first iteration samples from the reference itself (KL 0, so the penalty is 0) and both runs take the same
    # step; the second samples the same responses from the same policy, so both see the same KL, and only the β = 1
    # run's rewards carry −β·KL: its update differs. (Catches a KL term dropped from the rewards or a β that never
    # reaches them: the two runs then stay identical. That the leash holds the policy back over a run is
    # test_ppo.py::test_without_a_leash_the_policy_drifts_further.)
    runs = {}
    for beta in (0.0, 1.0):
        rows = [json.loads(line) for line in (tmp_path / f"ppo-beta-{beta}" / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) == 6 and all(r["objective/kl_coef"] == beta for r in rows)
        assert ppo_points[f"beta={beta}"]["model"] == str(tmp_path / f"ppo-beta-{beta}" / "ppo")
        runs[beta] = rows
    free, leashed = runs[0.0], runs[1.0]
    for key in ("objective/kl", "reward/score_mean", "policy/loss", "value/loss"):
        assert leashed[0][key] == pytest.approx(free[0][key], abs=1e-6), key
    assert leashed[0]["objective/kl"] == pytest.approx(0.0, abs=1e-5)
    assert leashed[1]["objective/kl"] == pytest.approx(free[1]["objective/kl"], abs=1e-5)
    assert abs(leashed[1]["objective/kl"]) > 1e-3  # the penalty of the second iteration is not 0
    assert abs(leashed[1]["value/loss"] - free[1]["value/loss"]) > 1e-4  # the returns carry −β·KL
    assert json.loads((tmp_path / "frontier.json").read_text())["points"] == result["points"]
    assert "id='frontier'" in (tmp_path / "report.html").read_text()
    # a second run reuses the finished PPO runs instead of training again
    again = run_frontier(cfg)
    assert [p["kl"] for p in again["points"]] == [p["kl"] for p in result["points"]]
