"""Several reward-vs-KL frontiers side by side (`tether frontier combine=[...]`): gains over each run's own start,
mean / min / max per setting, fits pooled over the runs; worked out by hand."""

import json
import math

import pytest

from tether.config import FrontierConfig
from tether.data import DataError
from tether.eval.frontier_seeds import combine, run_gains
from tether.eval.report import frontier_seeds_chart
from tether.recipes.frontier import run_frontier


def _run(start_proxy, start_gold, points):
    return {"start": {"proxy": start_proxy, "gold": start_gold},
            "points": [{"method": m, "setting": s, "kl": kl, "proxy": p, "gold": g} for m, s, kl, p, g in points]}


# two seeds: each run's rewards on its own scale (seed 1's start is 1.0 higher in proxy, 0.1 in gold)
SEED0 = _run(-0.8, 0.10, [("best-of-n", "N=1", 0.0, -0.8, 0.10), ("best-of-n", "N=4", 0.64, 1.2, 0.35),
                          ("ppo", "beta=0.1", 3.0, 1.6, 0.40), ("dpo", "beta=0.1", 0.6, 0.7, 0.38)])
SEED1 = _run(0.2, 0.20, [("best-of-n", "N=1", 0.0, 0.2, 0.20), ("best-of-n", "N=4", 0.64, 2.6, 0.41),
                         ("ppo", "beta=0.1", 2.0, 2.4, 0.46)])  # (no DPO point in this run)


def test_gains_are_over_each_runs_own_start():
    gains = run_gains(SEED1, "s1")
    assert [(p["method"], p["setting"], p["kl"]) for p in gains] == [("best-of-n", "N=1", 0.0), ("best-of-n", "N=4", 0.64),
                                                                     ("ppo", "beta=0.1", 2.0)]
    assert [p["proxy_gain"] for p in gains] == pytest.approx([0.0, 2.4, 2.2])
    assert [p["gold_gain"] for p in gains] == pytest.approx([0.0, 0.21, 0.26])


def test_each_setting_gets_its_mean_and_range_over_the_runs_that_have_it():
    combined = combine({"s0": SEED0, "s1": SEED1})
    assert combined["runs"] == ["s0", "s1"]
    rows = {(r["method"], r["setting"]): r for r in combined["settings"]}
    assert list(rows) == [("best-of-n", "N=4"), ("ppo", "beta=0.1"), ("dpo", "beta=0.1")]  # N = 1 (the start) left out
    bon = rows[("best-of-n", "N=4")]
    # proxy gains 1.2 − (−0.8) = 2.0 and 2.6 − 0.2 = 2.4; gold gains 0.25 and 0.21
    assert bon["n"] == 2 and bon["kl"] == pytest.approx({"mean": 0.64, "min": 0.64, "max": 0.64})
    assert bon["proxy_gain"] == pytest.approx({"mean": 2.2, "min": 2.0, "max": 2.4})
    assert bon["gold_gain"] == pytest.approx({"mean": 0.23, "min": 0.21, "max": 0.25})
    ppo = rows[("ppo", "beta=0.1")]  # KL 3.0 and 2.0; proxy gains 2.4 and 2.2; gold 0.30 and 0.26
    assert ppo["kl"] == pytest.approx({"mean": 2.5, "min": 2.0, "max": 3.0})
    assert ppo["proxy_gain"] == pytest.approx({"mean": 2.3, "min": 2.2, "max": 2.4})
    assert ppo["gold_gain"] == pytest.approx({"mean": 0.28, "min": 0.26, "max": 0.30})
    assert rows[("dpo", "beta=0.1")]["n"] == 1  # only seed 0 has it
    assert rows[("dpo", "beta=0.1")]["gold_gain"] == pytest.approx({"mean": 0.28, "min": 0.28, "max": 0.28})


def test_the_fit_is_pooled_over_the_runs():
    # PPO gains lying exactly on d(α − β log d), α = 0.3, β = 0.05, at KL 1, 4 (seed 0) and 2.25, 9 (seed 1), each
    # run with its own start: the pooled fit recovers α and β (and R² = 1), which neither run's two points alone
    # would pin against noise
    def gain(kl):
        d = math.sqrt(kl)
        return d * (0.3 - 0.05 * math.log(d))

    runs = {}
    for name, start, kls in (("s0", 0.1, (1.0, 4.0)), ("s1", 0.4, (2.25, 9.0))):
        runs[name] = _run(0.0, start, [("ppo", f"beta={k}", k, 0.0, start + gain(k)) for k in kls])
    fits = {(f["method"], f["reward"]): f for f in combine(runs)["fits"]}
    fit = fits[("ppo", "gold")]
    assert fit["n_points"] == 4 and fit["alpha"] == pytest.approx(0.3) and fit["beta"] == pytest.approx(0.05)
    assert fit["r2"] == pytest.approx(1.0)
    assert fit["peak_kl"] == pytest.approx(math.exp(2 * (0.3 / 0.05 - 1)))  # d* = exp(α/β − 1), KL* = d*²


@pytest.mark.parametrize("result, problem", [({"start": {"gold": 0.0}, "points": []}, "s9: no points"),
                                             ({"points": [{"method": "ppo"}]}, "s9: no start")])
def test_a_run_without_points_or_start_is_named(result, problem):
    with pytest.raises(ValueError, match=problem):
        combine({"s9": result})


def test_the_chart_draws_a_mean_per_method_and_keeps_the_runs_out_of_the_legend():
    chart = frontier_seeds_chart(combine({"run-zero": SEED0, "run-one": SEED1}), "gold")
    assert "gold gain over the start vs KL, 2 runs" in chart
    for entry in ("best-of-n mean", "ppo mean", "dpo mean"):
        assert f">{entry}</text>" in chart
    assert "run-zero" not in chart and "run-one" not in chart  # the pale per-run lines have no legend entry
    # one pale line per run and method, each from (0, 0): best-of-n and ppo in both runs, dpo in seed 0
    assert chart.count("stroke-opacity='0.35'") == 5


def test_combine_reads_the_runs_and_writes_the_table_and_plots(tmp_path):
    for name, result in (("s0", SEED0), ("s1", SEED1)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "frontier.json").write_text(json.dumps(result))
    out = tmp_path / "seeds"
    combined = run_frontier(FrontierConfig(run_dir=str(out), combine=[str(tmp_path / "s0"), str(tmp_path / "s1")]))
    written = json.loads((out / "frontier_seeds.json").read_text())
    assert written["settings"] == combined["settings"] and len(written["settings"]) == 3
    assert written["start"] == {str(tmp_path / "s0"): SEED0["start"], str(tmp_path / "s1"): SEED1["start"]}
    assert "xmlns='http://www.w3.org/2000/svg'" in (out / "frontier_seeds-gold.svg").read_text().split(">")[0]
    assert (out / "frontier_seeds-proxy.svg").is_file()
    # its config is a section of its own, so combining into a sweep's run_dir keeps the sweep's config
    assert "frontier_combine:" in (out / "config.yaml").read_text()


def test_combine_names_a_missing_or_broken_frontier(tmp_path):
    with pytest.raises(DataError, match=r"combine: .*nope/frontier.json does not exist"):
        run_frontier(FrontierConfig(run_dir=str(tmp_path / "out"), combine=[str(tmp_path / "nope")]))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "frontier.json").write_text("{oops")
    with pytest.raises(DataError, match=r"combine: .*bad/frontier.json is not JSON \(line 1, column 2\)"):
        run_frontier(FrontierConfig(run_dir=str(tmp_path / "out"), combine=[str(tmp_path / "bad")]))
