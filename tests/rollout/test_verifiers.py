"""The math answer checker: where the final answer is found, and when two numbers are the same answer."""

from fractions import Fraction

import pytest

from tether.rollout.verifiers import CORRECT, UNPARSEABLE, WRONG, check_math, extract_answer, last_boxed, parse_number


@pytest.mark.parametrize("text, answer", [
    ("So x = 3 and then \\boxed{42}.", "42"),
    ("First \\boxed{1}, corrected: \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),  # the last box, nested braces kept
    ("She has 5 apples and buys 7.\n#### 12\nIt took 3 steps.", "12"),  # GSM8K's marker, not the last number
    ("3 + 4 = 7, so the answer is 7. Check: 7 - 4 = 3", "7"),  # after "the answer is", not the last number
    ("The Answer is: $1,250 in total", "$1,250"),
    ("so the answer is 6 + 3 = 9.", "9"),  # the result of the sum the answer states, not its first term
    ("The answer is 2.5 = 5/2. Then 7 more", "5/2"),  # a decimal point does not end the clause
    ("The answer is 12. Check: 3 * 4 = 12 = 12", "12"),  # an "=" in a later sentence is not this answer's
    ("Tom walks 3 km, then 2 km, 5 km in all", "5"),  # no marker: the last number
    ("I do not know.", None),
    ("\\boxed{unclosed", None),  # a box that never closes is not an answer; no number either
])
def test_the_final_answer_is_found_where_solutions_put_it(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize("text, value", [
    ("1,234", Fraction(1234)), ("-3", Fraction(-3)), ("−3", Fraction(-3)), ("2.50", Fraction(5, 2)),
    ("3/4", Fraction(3, 4)), ("\\frac{3}{4}", Fraction(3, 4)), ("\\dfrac{6}{8}", Fraction(3, 4)),
    ("-\\frac{1}{2}", Fraction(-1, 2)), ("$5", Fraction(5)), ("40%", Fraction(40)), ("12 apples", Fraction(12)),
    (".5", Fraction(1, 2)), ("x = 7", Fraction(7)),
    ("seven", None), ("", None), ("1/0", None), ("\\frac{1}{0}", None), (None, None),
])
def test_numbers_are_read_exactly(text, value):
    assert parse_number(text) == value


def test_equal_numbers_in_different_forms_are_the_same_answer():
    assert check_math("so it is \\boxed{0.75}", "3/4").verdict == CORRECT
    assert check_math("#### \\frac{3}{4}", 0.75).verdict == CORRECT
    assert check_math("the answer is 2.50 dollars", "2.5").verdict == CORRECT
    assert check_math("the answer is 1,000", 1000).reward == 1.0


def test_a_wrong_and_an_unparseable_answer_are_told_apart():
    wrong = check_math("the answer is 8", 7)
    assert (wrong.verdict, wrong.extracted, wrong.reward) == (WRONG, "8", 0.0)
    none = check_math("I cannot solve this.", 7)
    assert (none.verdict, none.extracted, none.reward) == (UNPARSEABLE, None, 0.0)
    assert check_math("0.7499 is close", "3/4").verdict == WRONG  # exact, not within a tolerance


def test_a_reference_that_is_not_a_number_is_an_error():
    with pytest.raises(ValueError, match="reference answer 'many' is not a number"):
        check_math("\\boxed{3}", "many")


def test_last_boxed_reads_fbox_and_nested_braces():
    assert last_boxed("\\fbox{a{b}c}") == "a{b}c" and last_boxed("no box") is None
