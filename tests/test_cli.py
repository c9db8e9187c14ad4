"""cli.py: help at every level, overrides, errors before any work, the run hand-off."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

import fedexit_jax
from fedexit_jax import checkpoint, cli
from fedexit_jax import config_utils as cu

REPO = Path(__file__).resolve().parents[1]


def _help(capsys, *argv):
  with pytest.raises(SystemExit) as e:
    cli.main([*argv, "--help"])
  assert e.value.code == 0
  return capsys.readouterr().out


def test_help_at_every_level(capsys):
  top = _help(capsys)
  assert "fedexit run" in top and "fedexit data synth" in top and "fedexit convert" in top
  run = _help(capsys, "run")
  for needle in ("--workdir", "--resume", "metrics.jsonl", "checkpoints/", "--config.KEY=VALUE",
                 "configs/default.py", "Examples:"):
    assert needle in run
  assert "--out" in _help(capsys, "data", "synth")
  assert "SRC" in _help(capsys, "convert")


def test_console_script_and_default_config_path():
  assert 'fedexit = "fedexit_jax.cli:main"' in (REPO / "pyproject.toml").read_text()
  assert cu.default_config_path() == REPO / "configs" / "default.py"


def test_dry_run_prints_overridden_config_and_writes_nothing(tmp_path, capsys):
  work = tmp_path / "w"
  rc = cli.main(["run", "--workdir", str(work), "--config.rounds=3", "--config.weighting",
                 "uniform", "--dry-run"])
  out = capsys.readouterr().out
  assert rc == 0
  assert "rounds: 3" in out and "weighting: uniform" in out and "from round 0" in out
  assert not work.exists()


def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, capsys):
  cases = [
      (["--config.roundz=3"], "unknown config key 'roundz'; did you mean 'rounds'"),
      (["--config.model.exits=3,6,15"], "lie beyond the backbone"),
      (["--config.clients_per_round=1000"], "exceeds the 100 clients"),
      (["--config", str(tmp_path / "missing.py")], "missing.py' does not exist"),
  ]
  for extra, message in cases:
    rc = cli.main(["run", "--workdir", str(tmp_path / "w"), *extra])
    err = capsys.readouterr().err
    assert rc == 2, extra
    assert err.startswith("fedexit: error: ") and message in err, err
  with pytest.raises(SystemExit) as e:  # overrides belong to `run`
    cli.main(["convert", "x", "--out", "y", "--config.rounds=3"])
  assert e.value.code == 2


def test_workdir_of_another_run_is_refused_before_any_work(tmp_path, capsys):
  config = cu.default_config()
  checkpoint.save(tmp_path, 5, {"x": 1}, config=config)
  rc = cli.main(["run", "--workdir", str(tmp_path), "--config.seed=1", "--dry-run"])
  err = capsys.readouterr().err
  assert rc == 2 and "another run" in err and "seed: 0 -> 1" in err
  # The same config with --resume is accepted and resumes from round 5.
  assert cli.main(["run", "--workdir", str(tmp_path), "--resume", "--dry-run"]) == 0
  assert "would resume from round 5" in capsys.readouterr().out


def test_run_hands_the_validated_config_to_train(tmp_path, monkeypatch):
  calls = []
  train = types.ModuleType("fedexit_jax.train")
  train.train_and_evaluate = lambda config, workdir, resume=False: calls.append(
      (config, workdir, resume))
  monkeypatch.setitem(sys.modules, "fedexit_jax.train", train)
  monkeypatch.setattr(fedexit_jax, "train", train, raising=False)
  paper = str(REPO / "configs" / "paper_kws12.py") + ":35"
  (tmp_path / "sc").mkdir()  # the data folder must exist (checked before the hand-off)
  rc = cli.main(["run", "--config", paper, "--workdir", str(tmp_path / "w"), "--resume",
                 f"--config.data.dir={tmp_path / 'sc'}", "--config.rounds=2"])
  assert rc == 0
  (config, workdir, resume), = calls
  assert (config.data.num_classes, config.rounds) == (35, 2)
  assert config.data.dir == str(tmp_path / "sc")
  assert workdir == str(tmp_path / "w") and resume is True


def test_convert_reports_a_missing_checkpoint(tmp_path, capsys):
  rc = cli.main(["convert", str(tmp_path / "nope.bin"), "--out", str(tmp_path / "out")])
  err = capsys.readouterr().err
  assert rc == 2 and err.startswith("fedexit: error: ") and "nope.bin" in err
  assert not (tmp_path / "out").exists()
