"""Intervals and paired differences against closed forms (Student t with 2 degrees of freedom:
F(t) = 1/2 + t / (2 sqrt(t^2 + 2)), so the 97.5% quantile is sqrt(2 * 0.95^2 / (1 - 0.95^2)) and
the two-sided p-value of t is 1 - |t| / sqrt(t^2 + 2))."""
import math

import numpy as np
import pytest

from fedexit_jax import stats

T2 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))  # 4.3027


def test_mean_ci_three_values():
  ci = stats.mean_ci([1.0, 2.0, 3.0])  # mean 2, sd 1
  assert ci.n == 3 and ci.mean == pytest.approx(2.0)
  assert ci.half_width == pytest.approx(T2 / math.sqrt(3), rel=1e-9)
  assert ci.low == pytest.approx(2.0 - T2 / math.sqrt(3), rel=1e-9)


def test_one_value_has_no_interval():
  ci = stats.mean_ci([0.3])
  assert ci.mean == pytest.approx(0.3) and ci.low is None and ci.half_width is None
  p = stats.paired_difference([0.2], [0.3])
  assert p.p_value is None and stats.verdict(p) == "one seed: no verdict"


def test_paired_difference_hand_computed():
  a, b = [0.20, 0.18, 0.22], [0.21, 0.20, 0.25]  # d = -0.01, -0.02, -0.03: mean -0.02, sd 0.01
  p = stats.paired_difference(a, b)
  t = -0.02 / (0.01 / math.sqrt(3))
  assert p.diff.mean == pytest.approx(-0.02, rel=1e-9)
  assert p.diff.half_width == pytest.approx(T2 * 0.01 / math.sqrt(3), rel=1e-6)
  assert p.p_value == pytest.approx(1 - abs(t) / math.sqrt(t * t + 2), rel=1e-6)  # 0.0742
  assert (p.wins, p.losses) == (3, 0)
  assert stats.verdict(p).startswith("not distinguishable")  # CI -0.045..0.005 contains 0


def test_pairing_removes_shared_seed_variation():
  # Seeds differ a lot, the scheme effect is a constant -0.01 with small noise: the paired
  # interval excludes 0 although the unpaired ones overlap.
  base = np.array([0.10, 0.30, 0.20, 0.25, 0.15])
  a = base - 0.01 + np.array([0.001, -0.001, 0.0005, 0.0, -0.0005])
  p = stats.paired_difference(a, base)
  assert p.diff.high < 0 and p.p_value < 1e-3 and stats.verdict(p).startswith("lower")
  ca, cb = stats.mean_ci(a), stats.mean_ci(base)
  assert ca.high > cb.low  # unpaired intervals overlap


def test_identical_and_bad_inputs():
  p = stats.paired_difference([0.1, 0.2], [0.1, 0.2])
  assert p.p_value == 1.0 and p.diff.mean == 0.0 and (p.wins, p.losses) == (0, 0)
  with pytest.raises(ValueError, match="pair the same seeds"):
    stats.paired_difference([0.1, 0.2], [0.1])
  with pytest.raises(ValueError, match="non-finite"):
    stats.mean_ci([0.1, float("nan")])
