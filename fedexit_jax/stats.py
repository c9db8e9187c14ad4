"""Uncertainty of a comparison over seeds: t intervals and paired differences.

A scheme comparison is a finding only with its uncertainty. Every scheme is run with the same
seeds (one seed = the same partition, tiers, cohorts and init for every scheme), so the natural
test is paired: the per-seed difference d_s = a_s - b_s removes the seed-to-seed variation that
both schemes share. With n seeds:

    mean +- t_{n-1, 1-(1-level)/2} * sd / sqrt(n)      (Student t interval, sd with ddof=1)
    p = 2 * P(T_{n-1} > |mean(d)| / (sd(d) / sqrt(n)))  (two-sided paired t-test)

With one seed there is no interval (None): a single run is a smoke test, not a comparison.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
from scipy import stats as _st


class Interval(NamedTuple):
  mean: float
  low: float | None   # None: fewer than 2 values, no interval
  high: float | None
  n: int

  @property
  def half_width(self) -> float | None:
    return None if self.low is None else (self.high - self.low) / 2


class Paired(NamedTuple):
  """a - b over the seeds both have."""
  diff: Interval
  p_value: float | None  # two-sided paired t-test; None with < 2 seeds; 1.0 if every d_s is 0
  wins: int              # seeds where a < b (lower error: a wins)
  losses: int            # seeds where a > b


def mean_ci(values: Sequence[float], level: float = 0.95) -> Interval:
  """Mean and Student-t confidence interval of independent values (e.g. one per seed)."""
  x = np.asarray(values, np.float64)
  if x.ndim != 1 or x.size == 0:
    raise ValueError(f"mean_ci needs a non-empty 1-D sequence, got shape {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"mean_ci: non-finite values {x.tolist()}")
  m = float(x.mean())
  if x.size < 2:
    return Interval(m, None, None, 1)
  h = float(_st.t.ppf(1 - (1 - level) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
  return Interval(m, m - h, m + h, int(x.size))


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Paired:
  """a - b paired by position (seed): mean difference, its t interval and the t-test p-value."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"paired_difference: {a.shape} vs {b.shape}; pair the same seeds")
  d = a - b
  ci = mean_ci(d, level)
  if d.size < 2:
    p = None
  elif np.all(d == d[0]):  # zero spread: the t statistic is 0/0 or infinite
    p = 1.0 if d[0] == 0 else 0.0
  else:
    t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    p = float(2 * _st.t.sf(abs(t), d.size - 1))
  return Paired(ci, p, int(np.sum(d < 0)), int(np.sum(d > 0)))


def verdict(p: Paired, alpha: float = 0.05) -> str:
  """Plain words for 'is a lower than b': from the interval of a - b."""
  if p.diff.low is None:
    return "one seed: no verdict"
  if p.diff.high < 0:
    return f"lower (95% CI excludes 0, p={p.p_value:.3g})"
  if p.diff.low > 0:
    return f"higher (95% CI excludes 0, p={p.p_value:.3g})"
  return f"not distinguishable (95% CI contains 0, p={p.p_value:.3g})"
