import random

import pytest

from tether.feedback.aggregate import dawid_skene, group_by_item, majority_vote
from tether.feedback.agreement import cohen_kappa, fleiss_kappa, krippendorff_alpha_nominal, percent_agreement


def test_cohen_kappa_textbook_example():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 → p_o = 0.7, p_e = 0.5·0.6 + 0.5·0.4 = 0.5, κ = 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert percent_agreement(a, b) == pytest.approx(0.7)
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == 1.0


def test_fleiss_kappa_textbook_example():
    # Fleiss (1971) style table from the standard worked example: 10 items, 14 raters, 5 categories → κ ≈ 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-4)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[1, 1], [2, 1]])


def test_krippendorff_alpha_by_hand():
    # units (1,1), (1,2), (2,2), (2,2): o11 = 2, o12 = o21 = 1, o22 = 4; n1 = 3, n2 = 5, n = 8
    # α = 1 − (8 − 1)·2 / (3·5 + 5·3) = 1 − 14/30
    assert krippendorff_alpha_nominal([[1, 1], [1, 2], [2, 2], [2, 2]]) == pytest.approx(1 - 14 / 30)
    # a unit with a single label is not pairable and changes nothing; missing labels are allowed
    assert krippendorff_alpha_nominal([[1, 1], [1, 2], [2, 2], [2, 2], [1]]) == pytest.approx(1 - 14 / 30)
    # three labels on a unit: each of its 6 ordered pairs weighs 1/(3 − 1): o11 = 3, o12 = o21 = 1, o22 = 2
    # n1 = 4, n2 = 3, n = 7 → α = 1 − 6·2 / (4·3 + 3·4) = 0.5
    assert krippendorff_alpha_nominal([[1, 1, 1], [1, 2], [2, 2]]) == pytest.approx(0.5)


def test_majority_vote_and_ties():
    assert majority_vote(["A", "A", "B"]) == ("A", pytest.approx(2 / 3))
    assert majority_vote(["A", "B"]) == (None, 0.5)


def test_dawid_skene_uses_a_consistently_wrong_annotator():
    rng = random.Random(0)
    truth = {i: rng.randint(0, 1) for i in range(300)}
    annotations = []
    for item, label in truth.items():
        for annotator, accuracy in (("good1", 0.8), ("good2", 0.75), ("noisy", 0.55), ("contrarian", 0.05)):
            given = label if rng.random() < accuracy else 1 - label
            annotations.append((item, annotator, given))
    result = dawid_skene(annotations, n_classes=2)
    ds_accuracy = sum(result.labels()[i] == truth[i] for i in truth) / len(truth)
    votes = group_by_item(annotations)
    majority = {i: majority_vote(v)[0] for i, v in votes.items()}
    mv_accuracy = sum(majority[i] == truth[i] for i in truth) / len(truth)  # ties count as wrong
    assert ds_accuracy > mv_accuracy + 0.1
    assert result.accuracy("contrarian") < 0.15 and result.accuracy("good1") > 0.7
