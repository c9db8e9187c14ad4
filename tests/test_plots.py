"""plots.py: the three PNGs are written from plain rows and are real images."""
from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from fedexit_jax import metrics, plots

TIERS = [{"tier": "tier 0 (depth 3)", "depth": 3, "flops_per_step": 2.0e9,
          "peak_memory_bytes": 300 * 2**20, "upload_bytes": 30 * 2**20},
         {"tier": "tier 1 (depth 6)", "depth": 6, "flops_per_step": 4.0e9,
          "peak_memory_bytes": 400 * 2**20, "upload_bytes": 55 * 2**20}]
POLICIES = [{"policy": "tier depth 3", "threshold": None, "avg_depth": 3.0, "accuracy": 0.7},
            {"policy": "tier depth 6", "threshold": None, "avg_depth": 6.0, "accuracy": 0.8},
            {"policy": "confidence >= 0.9", "threshold": 0.9, "avg_depth": 4.2, "accuracy": 0.78},
            {"policy": "confidence >= 0.5", "threshold": 0.5, "avg_depth": 3.1, "accuracy": 0.71}]


def _is_nonblank_png(path):
  img = mpimg.imread(path)
  assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
  return float(np.std(img[..., :3])) > 0.05  # not a blank canvas


def test_make_plots_writes_three_pngs(tmp_path):
  with metrics.MetricsWriter(tmp_path, tensorboard=False) as w:
    for r in range(1, 11):
      w.write(r, {"error": {"3": 0.9 - 0.04 * r, "6": 0.9 - 0.06 * r}})
  made = plots.make_plots(tmp_path, tiers=TIERS, policies=POLICIES, chance=11 / 12)
  names = sorted(p.name for p in made)
  assert names == ["accuracy_vs_depth.png", "error_per_exit.png", "tier_costs.png"]
  for p in made:
    assert p.parent == tmp_path / "plots"
    assert _is_nonblank_png(p)


def test_make_plots_without_inputs_makes_nothing(tmp_path):
  assert plots.make_plots(tmp_path) == []


def test_empty_inputs_raise(tmp_path):
  with pytest.raises(ValueError, match="no rows"):
    plots.plot_error_curves([{"round": 1}], tmp_path / "x.png")
  with pytest.raises(ValueError, match="no tiers"):
    plots.plot_tier_costs([], tmp_path / "x.png")
  with pytest.raises(ValueError, match="no early-exit"):
    plots.plot_accuracy_vs_depth([], tmp_path / "x.png")
