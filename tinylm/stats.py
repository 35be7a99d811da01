"""How sure a share measured on a sample is: Wilson's interval, and Newcombe's for a difference.

A model that wrote 120 poems, 58 of them regulated, scores 48 %; another 120 poems from the
same model would score a little differently. A 95 % interval says how far: the true share (of
all the poems that model would write with these settings) lies inside it for 95 of 100 samples.
Two models rank with confidence when the interval of their difference excludes 0. The same goes
for a mean over batches (a validation loss): `mean_interval`, `mean_difference_interval`. These
intervals cover the sampling of poems and text only, not the training: another seed trains
another model, and that spread needs more runs to measure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z_95 = 1.959963984540054  # the standard normal's 97.5 % quantile: two-sided 95 % intervals


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson's score interval for a binomial share; unlike p ± z·SE it stays inside [0, 1]."""
    _check_counts(successes, trials)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int, z: float = Z_95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for share a − share b, from the two Wilson intervals.

    Method 10 of Newcombe (1998), Statistics in Medicine 17:873: for two independent samples it
    keeps close to its nominal coverage even for small samples and shares near 0 or 1.
    """
    low_a, high_a = wilson_interval(successes_a, trials_a, z)
    low_b, high_b = wilson_interval(successes_b, trials_b, z)
    p_a, p_b = successes_a / trials_a, successes_b / trials_b
    difference = p_a - p_b
    return (
        difference - math.hypot(p_a - low_a, high_b - p_b),
        difference + math.hypot(high_a - p_a, p_b - low_b),
    )


def mean_interval(values: Sequence[float], z: float = Z_95) -> tuple[float, float]:
    """A normal-approximation interval for the mean of independent measurements (mean ± z·SE)."""
    mean, error = _mean_and_standard_error(values)
    return mean - z * error, mean + z * error


def mean_difference_interval(
    values_a: Sequence[float], values_b: Sequence[float], z: float = Z_95
) -> tuple[float, float]:
    """The same for mean a − mean b, two independent samples (Welch's standard error)."""
    mean_a, error_a = _mean_and_standard_error(values_a)
    mean_b, error_b = _mean_and_standard_error(values_b)
    half = z * math.hypot(error_a, error_b)
    return mean_a - mean_b - half, mean_a - mean_b + half


def _mean_and_standard_error(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        raise ValueError(f"an interval for a mean needs at least two values, got {len(values)}")
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


def _check_counts(successes: int, trials: int) -> None:
    if trials < 1:
        raise ValueError(f"a share needs at least one trial, got trials={trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be from 0 to trials ({trials}), got {successes}")
