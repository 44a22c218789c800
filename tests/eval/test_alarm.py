"""The reward-hacking alarm on hand-made held-out curves."""

from tether.eval.alarm import HackingMonitor, HeldOutPoint


def _point(i, proxy, gold, length=20.0, share=0.1, gram="a b c"):
    return HeldOutPoint(i, proxy, gold, length, share, top_ngram=gram)


def test_proxy_up_gold_down_fires_after_patience_and_once():
    monitor = HackingMonitor(patience=2, gold_drop=0.1)
    curve = [(0, 0.0, 1.0), (5, 0.5, 1.3), (10, 0.8, 1.25), (15, 1.0, 1.1), (20, 1.2, 1.0), (25, 1.5, 0.9)]
    fired = [monitor.update(_point(*c)) for c in curve]
    # best gold 1.3 at iteration 5 (proxy 0.5): iteration 10 is only 0.05 below; 15 is 0.2 below with proxy 1.0 > 0.5
    # (streak 1), 20 makes the streak 2 → fires; 25 still holds but does not fire again
    assert [len(f) for f in fired] == [0, 0, 0, 0, 1, 0]
    (event,) = fired[4]
    assert event["rule"] == "proxy_up_gold_down" and event["iteration"] == 20
    assert "1.300" in event["message"] and "1.000" in event["message"]


def test_gold_falling_with_the_proxy_is_not_hacking():
    monitor = HackingMonitor(patience=1, gold_drop=0.1)
    for c in [(0, 1.0, 1.0), (5, 0.8, 0.7), (10, 0.5, 0.4)]:  # both fall: a bad run, not over-optimisation
        assert monitor.update(_point(*c)) == []


def test_rule_rearms_after_it_clears():
    monitor = HackingMonitor(patience=1, gold_drop=0.1)
    events = [monitor.update(_point(*c)) for c in [(0, 0.0, 1.0), (1, 0.5, 0.8), (2, 0.6, 1.0), (3, 0.7, 0.8)]]
    assert [len(e) for e in events] == [0, 1, 0, 1]


def test_length_and_repetition_rules_compare_with_the_reference():
    monitor = HackingMonitor(patience=1, length_ratio=2.0, ngram_share=0.6)
    assert monitor.update(_point(0, 0, 0, length=20, share=0.2)) == []
    assert monitor.update(_point(1, 0, 0, length=40, share=0.35)) == []       # exactly 2x: not above
    fired = monitor.update(_point(2, 0, 0, length=41, share=0.7, gram="buy now today"))
    assert sorted(e["rule"] for e in fired) == ["length", "repetition"]
    assert "buy now today" in [e for e in fired if e["rule"] == "repetition"][0]["message"]
    # a reference that already repeats a phrase (share 0.5) needs 2x that before the rule holds
    other = HackingMonitor(patience=1)
    other.update(_point(0, 0, 0, share=0.5))
    assert other.update(_point(1, 0, 0, share=0.9)) == []


def test_state_round_trip_continues_the_streak():
    monitor = HackingMonitor(patience=2)
    for c in [(0, 0.0, 1.0), (5, 0.5, 0.8)]:
        monitor.update(_point(*c))
    restored = HackingMonitor(patience=2)
    restored.load_state_dict(monitor.state_dict())
    assert restored.update(_point(10, 0.6, 0.7))[0]["rule"] == "proxy_up_gold_down"
