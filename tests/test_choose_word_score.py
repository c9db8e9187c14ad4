"""experiments/choose_word_score.py's rule on hand-made tables (the end-to-end run on finished ASR
runs is in test_tasks_e2e)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import choose_word_score as cws  # pylint: disable=wrong-import-position


def _table(**per_score):
  """{score: {run: {"wer_lexicon": {exit: %}}}} from {name: [(exit-3 %, exit-9 %) per run]}."""
  out = {}
  for name, runs in per_score.items():
    w = float(name.replace("m", "-").replace("p", ""))
    out[w] = {f"run{i}": {"wer_lexicon": {"3": a, "9": b}} for i, (a, b) in enumerate(runs)}
  return out


def test_lowest_mean_over_runs_and_exits_wins():
  # means: -2: (70 + 80 + 74 + 76) / 4 = 75; -1: (72 + 74 + 73 + 77) / 4 = 74; 0: 76
  table = _table(m2=[(70, 80), (74, 76)], m1=[(72, 74), (73, 77)], p0=[(76, 76), (76, 76)])
  assert cws.mean_wer(table[-2.0]) == pytest.approx(75.0)
  assert cws.mean_wer(table[-1.0]) == pytest.approx(74.0)
  assert cws.choose(table) == -1.0  # not -2, although it holds the single lowest figure


def test_a_tie_goes_to_the_score_nearest_zero_then_the_lower():
  assert cws.choose(_table(m2=[(74, 74)], p1=[(74, 74)], p3=[(74, 74)])) == 1.0
  assert cws.choose(_table(m1=[(74, 74)], p1=[(74, 74)])) == -1.0
