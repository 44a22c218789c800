"""The end-of-run held-out line of PPO / GRPO and the reward-model warning: exact texts for each case."""

from tether.eval.alarm import HackingMonitor, HeldOutPoint
from tether.eval.verdict import end_of_run_line, reward_model_warning


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
