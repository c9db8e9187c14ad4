"""Several runs (seeds x weighting schemes) trained by one compiled round program: each run's
workdir holds what its own `fedexit run` writes."""
from __future__ import annotations

import pytest

from fedexit_jax import checkpoint, config_utils, metrics, replica_train, train
from test_train_e2e import TINY, cache  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

RUNS = [(0, "paper"), (0, "fedavg_naive"), (1, "samples")]


def _config(cache, seed, weighting, rounds):  # noqa: F811
  import os
  os.environ["FEDEXIT_CACHE"] = str(cache)
  return config_utils.apply_overrides(
      config_utils.default_config(),
      TINY + [f"seed={seed}", f"weighting={weighting}", f"rounds={rounds}", "eval_every=2"])


def _assert_rows_close(a, b):
  assert [r["round"] for r in a] == [r["round"] for r in b]
  for ra, rb in zip(a, b):
    assert ra.keys() == rb.keys()
    for k, v in ra.items():
      if isinstance(v, dict) and k != "clients_per_depth":
        for e in v:
          assert v[e] == pytest.approx(rb[k][e], rel=1e-4, abs=1e-6), (k, e)
      elif isinstance(v, float):
        assert v == pytest.approx(rb[k], rel=1e-4, abs=1e-6), k
      else:
        assert v == rb[k], k  # rounds, counts: exact


def test_replicas_write_what_separate_runs_write_and_resume(cache, tmp_path):  # noqa: F811
  sep = {}
  for seed, w in RUNS:
    d = tmp_path / f"sep_{seed}_{w}"
    train.train_and_evaluate(_config(cache, seed, w, 3), d)
    sep[seed, w] = metrics.read_metrics(d)
  dirs = [tmp_path / f"rep_{seed}_{w}" for seed, w in RUNS]
  configs = [_config(cache, seed, w, 2) for seed, w in RUNS]
  out = replica_train.train_replicas(configs, dirs, progress=False)
  assert len(out) == 3 and all("error" in o and o["tiers"] for o in out)
  # resumed to round 3 together, as a stopped grid would be
  configs = [_config(cache, seed, w, 3) for seed, w in RUNS]
  replica_train.train_replicas(configs, dirs, progress=False)
  for (seed, w), d in zip(RUNS, dirs):
    _assert_rows_close(metrics.read_metrics(d), sep[seed, w])
    assert checkpoint.latest_step(d) == 3
    assert (d / "summary.md").stat().st_size > 0
  # the schemes differ: a check that could fail
  assert sep[0, "paper"][-1]["update_norm"] != sep[0, "fedavg_naive"][-1]["update_norm"]


def test_replicas_refuse_configs_that_differ_in_shape(cache, tmp_path):  # noqa: F811
  a = _config(cache, 0, "paper", 2)
  b = config_utils.apply_overrides(_config(cache, 0, "paper", 2), ["clients_per_round=2"])
  with pytest.raises(ValueError, match="may differ only in.*clients_per_round"):
    replica_train.train_replicas([a, b], [tmp_path / "a", tmp_path / "b"])
  with pytest.raises(ValueError, match="own workdir"):
    replica_train.train_replicas([a, a], [tmp_path / "a", tmp_path / "a"])


def test_groups_share_a_program_only_when_shapes_agree(cache, tmp_path):  # noqa: F811
  sims = [train.Simulation(_config(cache, s, w, 2), tmp_path / f"{s}{w}", False)
          for s, w in RUNS]
  groups = replica_train._groups(sims)
  assert sorted(i for g in groups for i in g) == [0, 1, 2]
  assert any(0 in g and 1 in g for g in groups)  # one seed, two schemes: one program
