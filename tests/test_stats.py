import pytest

from tinylm.stats import (
    difference_interval,
    mean_difference_interval,
    mean_interval,
    wilson_interval,
)


def test_wilson_matches_published_values():
    # Newcombe (1998), table I: 81/263 → 0.2553 to 0.3662; 15/148 → 0.0624 to 0.1605
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)


def test_wilson_stays_inside_zero_and_one():
    low, high = wilson_interval(0, 10)
    assert low == 0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1) and low == pytest.approx(0.7225, abs=1e-4)


def test_wilson_narrows_with_more_trials():
    small, large = wilson_interval(5, 10), wilson_interval(500, 1000)
    assert small[0] < large[0] < 0.5 < large[1] < small[1]


def test_difference_matches_newcombe():
    # Newcombe (1998), method 10 on 56/70 − 48/80: 0.0524 to 0.3339
    assert difference_interval(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def test_difference_of_equal_shares_contains_zero():
    low, high = difference_interval(30, 60, 30, 60)
    assert low < 0 < high and low == pytest.approx(-high)


@pytest.mark.parametrize(("successes", "trials"), [(1, 0), (-1, 5), (6, 5)])
def test_bad_counts_say_what_is_wrong(successes, trials):
    with pytest.raises(ValueError, match="trial|successes"):
        wilson_interval(successes, trials)


def test_mean_interval_is_mean_plus_minus_z_standard_errors():
    low, high = mean_interval([1.0, 2.0, 3.0, 4.0])  # mean 2.5, sd 1.291, SE 0.6455
    assert (low + high) / 2 == pytest.approx(2.5)
    assert (high - low) / 2 == pytest.approx(1.959964 * 0.645497, rel=1e-5)
    with pytest.raises(ValueError, match="at least two"):
        mean_interval([1.0])


def test_mean_difference_interval_adds_the_two_standard_errors():
    a, b = [1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.0]
    low, high = mean_difference_interval(a, b)
    assert (low + high) / 2 == pytest.approx(1.0)
    assert (high - low) / 2 == pytest.approx(1.959964 * 0.645497 * 2**0.5, rel=1e-5)
