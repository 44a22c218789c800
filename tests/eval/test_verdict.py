"""The end-of-run held-out line of PPO / GRPO and the reward-model warning: exact texts for each case."""

from tether.eval.alarm import HackingMonitor, HeldOutPoint
from tether.eval.verdict import end_of_run_line, eval_verdicts, reward_model_warning


def _state(golds, proxies, alarm_at=None):
    """A monitor's state after held-out points at iterations 0, 5, 10, ... (and one alarm if asked)."""
    monitor = HackingMonitor()
    for i, (gold, proxy) in enumerate(zip(golds, proxies)):
        monitor.history.append(HeldOutPoint(5 * i, proxy, gold, 20.0, 0.1))
    if alarm_at is not None:
        monitor.events.append({"iteration": alarm_at, "rule": "proxy_up_gold_down", "message": "..."})
    return monitor.state_dict()


def test_gold_rose():
    line = end_of_run_line("ppo", _state([0.84, 0.95, 1.0], [-0.30, -0.31, -0.32]))
    assert line == "[green]held-out: gold 0.84 → 1.00 (+0.16), proxy −0.30 → −0.32, no alarm[/]"


def test_flat_gold_is_not_called_a_success():
    line = end_of_run_line("ppo", _state([1.0, 1.01, 0.98], [0.1, 0.2, 0.3]))
    assert line == "[yellow]held-out: gold 1.00 → 0.98 (−0.02), proxy 0.10 → 0.30, no alarm, but gold did not rise[/]"
    # a change that shows as +0.00 is no rise either
    assert "but gold did not rise" in end_of_run_line("grpo", _state([0.5, 0.504], [0.0, 0.0]))


def test_alarm():
    line = end_of_run_line("ppo", _state([0.84, 1.0, 0.6], [-0.3, 0.1, 0.5], alarm_at=10))
    assert line == ("[bold red]held-out: gold 0.84 → 0.60 (−0.24), proxy −0.30 → 0.50, alarm at iteration 10 "
                    "(proxy up, gold down)[/]")


def test_no_held_out_evaluation_says_how_to_turn_it_on():
    assert end_of_run_line("ppo", None) == (
        "[yellow]held-out: no held-out evaluation[/] (set heldout.gold=module:function (e.g. "
        "tether.tasks.helpful:gold_reward) and heldout.prompts_file=<held-out prompts> to measure it and arm the "
        "reward-hacking alarm)")
    assert "only the starting policy was evaluated (gold 0.84)" in end_of_run_line("ppo", _state([0.84], [0.0]))


def test_reward_model_warning():
    assert reward_model_warning({"accuracy": 0.188, "length_baseline_accuracy": 0.396}) == (
        "the reward model's held-out accuracy 0.188 is below chance (0.5) and below the 'longer response wins' "
        "baseline (0.396): RL against it optimises the wrong thing. Check the preferences (chosen and rejected "
        "swapped?), add pairs or train longer")
    assert "is below the 'longer response wins' baseline (0.700)" in reward_model_warning(
        {"accuracy": 0.6, "length_baseline_accuracy": 0.7})
    assert reward_model_warning({"accuracy": 0.875, "length_baseline_accuracy": 0.396}) is None
    assert reward_model_warning({"n_train_pairs": 10}) is None  # no held-out pairs: nothing to judge


# --------------------------------------------------------------------------- tether eval: each model vs the reference


def _gain(estimate, low, high, n=120):
    return {"estimate": estimate, "low": low, "high": high, "n": n, "level": 0.95}


def _summary(**rows):
    return {"reference": "sft", "prompts": 120, "intervals": {"level": 0.95, "resamples": 2000},
            "models": {"sft": {"gold_mean": 0.5, "proxy_mean": 0.1}, **rows}}


def test_eval_verdict_uses_the_intervals():
    verdicts = eval_verdicts(_summary(
        ppo={"gold_mean": 0.66, "gold_gain": _gain(0.16, 0.05, 0.27), "proxy_gain": _gain(1.2, 0.8, 1.6),
             "win_rate_interval": _gain(0.62, 0.53, 0.71)},
        dpo={"gold_mean": 0.55, "gold_gain": _gain(0.05, -0.02, 0.12), "win_rate_interval": _gain(0.5, 0.41, 0.6)},
        bon={"gold_gain": _gain(-0.3, -0.45, -0.15), "proxy_gain": _gain(2.0, 1.5, 2.5)}))
    assert [(v.model, v.reference, v.status) for v in verdicts] == [("ppo", "sft", "improved"), ("dpo", "sft", "flat"),
                                                                     ("bon", "sft", "alarm")]  # no verdict for sft
    assert verdicts[0].sentence() == ("gold gain +0.16 [0.05, 0.27] over 120 prompts: above zero; proxy gain +1.20 "
                                      "[0.80, 1.60]: above zero; win-rate 0.62 [0.53, 0.71]: above ½.")
    # a positive estimate whose interval includes zero is no success
    assert verdicts[1].sentence() == ("gold gain +0.05 [−0.02, 0.12] over 120 prompts: includes zero; win-rate 0.50 "
                                      "[0.41, 0.60]: includes ½.")
    assert verdicts[2].sentence() == ("gold gain −0.30 [−0.45, −0.15] over 120 prompts: below zero; proxy gain +2.00 "
                                      "[1.50, 2.50]: above zero — the proxy rose while gold fell: reward hacking.")


def test_eval_verdict_without_gold_or_without_intervals():
    no_gold = eval_verdicts(_summary(ppo={"proxy_gain": _gain(0.3, 0.1, 0.5, n=40)}))
    assert [(v.status, v.sentence()) for v in no_gold] == [("flat", "proxy gain +0.30 [0.10, 0.50] over 40 prompts: "
                                                                    "above zero; no gold reward was measured, so no "
                                                                    "verdict (set gold= on tether eval).")]
    # an eval.json from before intervals: the held-out verdict's wording on the means, and that there is no interval
    old = {"reference": "sft", "prompts": 2, "models": {"sft": {"gold_mean": 0.5}, "ppo": {"gold_mean": 0.75},
                                                         "dpo": {"gold_mean": 0.498}}}
    assert [(v.status, v.sentence()) for v in eval_verdicts(old)] == [
        ("improved", "held-out gold rose 0.50 → 0.75 (+0.25) over 2 prompts; no interval in this eval.json (re-run "
                     "tether eval to get one)."),
        ("flat", "gold did not rise (+0.00: 0.50 → 0.50) over 2 prompts; no interval in this eval.json (re-run "
                 "tether eval to get one).")]
    assert eval_verdicts({"reference": "sft", "models": {"sft": {}, "ppo": {}}}) == []  # nothing measured
    assert eval_verdicts({"reference": "gone", "models": {"sft": {}}}) == [] and eval_verdicts(None) == []
