"""The scenarios runner: seed lists, every scenario once per seed with reuse, the centralized
steps budget, and the tables (paired differences to `paper`) on a 2-round tiny config."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from test_train_e2e import TINY

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("paper_scenarios",
                                               ROOT / "experiments" / "paper_scenarios.py")
ps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ps)


def test_parse_seeds():
  assert ps.parse_seeds("0-4") == [0, 1, 2, 3, 4]
  assert ps.parse_seeds("0,1,2") == [0, 1, 2]
  assert ps.parse_seeds("3,0-1") == [3, 0, 1]
  for bad in ("", "2-1", "1,1"):
    with pytest.raises(ValueError):
      ps.parse_seeds(bad)


def test_scenarios_names_and_deep_shares():
  from fedexit_jax import config_utils
  base = config_utils.default_config()
  todo = ps.scenarios(base, [10, 90])
  assert {"homogeneous_3", "homogeneous_6", "fedavg_naive", "paper", "samples", "uniform",
          "depth", "centralized"} <= set(todo)
  deep10 = todo["paper@deep10"]["tiers"]
  assert [(t["max_depth"], t["fraction"]) for t in deep10] == [(3, 0.9), (6, 0.1)]
  c = todo["centralized"]
  assert c["data.num_clients"] == 1 and c["loss"] == "all" and c["tiers"][0]["max_depth"] == 6


@pytest.mark.slow
def test_runner_two_seeds_paired_table_and_reuse(tmp_path, tmp_path_factory, capsys):
  os.environ["FEDEXIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
  tiny = [f"--config.{o}" for o in TINY if not o.startswith(("rounds=", "eval_every="))]
  args = ["--workdir", str(tmp_path / "w"), "--seeds", "0-1", "--only", "paper,uniform,centralized",
          "--out", str(tmp_path / "t.md"), "--config.rounds=2", "--config.eval_every=2"] + tiny
  assert ps.main(args) == 0
  data = json.loads((tmp_path / "t.json").read_text())
  assert data["seeds"] == [0, 1] and set(data["results"]) == {"paper", "uniform", "centralized"}
  for name, per_seed in data["results"].items():
    assert set(per_seed) == {"0", "1"}, name
    for r in per_seed.values():
      assert all(0.0 <= e <= 1.0 for e in r["error"].values())
  # the two seeds moved the run: different partitions/cohorts/init give different local steps
  # or errors
  p = data["results"]["paper"]
  assert (p["0"]["local_steps"], p["0"]["error"]) != (p["1"]["local_steps"], p["1"]["error"])
  # centralized: one client with the paper run's total local steps over the same rounds
  for s in ("0", "1"):
    budget = round(p[s]["local_steps"] / 2)
    assert data["results"]["centralized"][s]["local_steps"] == 2 * budget
  md = (tmp_path / "t.md").read_text()
  assert "Paired difference to `paper`" in md and "| uniform |" in md and "2 seeds" in md
  capsys.readouterr()
  assert ps.main(args) == 0  # every run is reused, not retrained
  assert capsys.readouterr().out.count("reused") == 6
  # the tables again from metrics.jsonl alone, and a seed that did not run is left out
  report = args + ["--report-only"]
  report[report.index("0-1")] = "0-2"
  assert ps.main(report) == 0
  again = json.loads((tmp_path / "t.json").read_text())
  assert again["seeds"] == [0, 1]
  for name, per_seed in data["results"].items():
    for s, r in per_seed.items():
      assert again["results"][name][s]["error"] == r["error"]


def test_runner_replicas_match_separate_runs(tmp_path, tmp_path_factory, capsys):
  """--replicas trains paper and uniform of both seeds in shared programs; the table's numbers
  are those of separate runs (float tolerance), and a rerun reuses every run."""
  os.environ["FEDEXIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
  tiny = [f"--config.{o}" for o in TINY if not o.startswith(("rounds=", "eval_every="))]
  common = ["--seeds", "0-1", "--only", "paper,uniform", "--config.rounds=2",
            "--config.eval_every=2"] + tiny
  sep = ["--workdir", str(tmp_path / "s"), "--out", str(tmp_path / "s.md")] + common
  rep = ["--workdir", str(tmp_path / "r"), "--out", str(tmp_path / "r.md"), "--replicas"] + common
  assert ps.main(sep) == 0
  capsys.readouterr()
  assert ps.main(rep) == 0
  out = capsys.readouterr().out
  groups = [line for line in out.splitlines() if line.startswith("== replicas: ")]
  assert any("seed 0 paper" in g and "seed 0 uniform" in g for g in groups), groups
  assert out.count("reused") == 4  # the loop after the replica groups only reads them
  # a finished run kept without its checkpoints (results committed to a repository) is read
  # from its metrics.jsonl, never retrained
  import shutil
  kept = tmp_path / "r" / "seed0" / "paper"
  before = (kept / "metrics.jsonl").read_text()
  shutil.rmtree(kept / "checkpoints")
  capsys.readouterr()
  assert ps.main(rep) == 0
  assert "== replicas" not in capsys.readouterr().out
  assert (kept / "metrics.jsonl").read_text() == before
  a = json.loads((tmp_path / "s.json").read_text())["results"]
  b = json.loads((tmp_path / "r.json").read_text())["results"]
  for name in ("paper", "uniform"):
    for s in ("0", "1"):
      assert b[name][s]["local_steps"] == a[name][s]["local_steps"]
      for e, v in a[name][s]["error"].items():
        assert b[name][s]["error"][e] == pytest.approx(v, abs=1e-6), (name, s, e)
