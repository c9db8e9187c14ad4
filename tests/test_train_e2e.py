"""End to end: the real pipeline (synthetic corpus -> clients -> compiled rounds -> checkpoints,
metrics, plots) on a tiny backbone; a run killed mid-way and resumed writes exactly the metrics of
an uninterrupted run."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from fedexit_jax import checkpoint, config_utils, metrics, runtime, train

pytestmark = pytest.mark.slow

TINY = [
    "rounds=6", "eval_every=1", "checkpoint_every=2", "progress_bar=False",
    "data.num_speakers=12", "data.per_word=1", "data.unknown_per_speaker=2",
    "data.test_fraction=0.25", "data.num_clients=6", "clients_per_round=3", "data.clip_seconds=0.5",
    "batch_size=8", "model.exits=(2, 4)", "model.checkpoint=None",
    "cpu_devices=1",  # the in-process reference run and the killed subprocess: same devices
    ('tiers=[{"fraction": 0.5, "max_depth": 2, "speed": 1.0}, '
     '{"fraction": 0.5, "max_depth": 4, "speed": 2.0}]'),
    "model.overrides.hidden_size=32", "model.overrides.num_hidden_layers=4",
    "model.overrides.num_attention_heads=2", "model.overrides.intermediate_size=64",
    "model.overrides.conv_dim=(16, 16, 16, 16, 16, 16, 16)",
    "model.overrides.num_conv_pos_embeddings=8", "model.overrides.num_conv_pos_embedding_groups=2",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


def _config(cache, extra=()):
  os.environ["FEDEXIT_CACHE"] = str(cache)
  return config_utils.apply_overrides(config_utils.default_config(), TINY + list(extra))


def _rows(workdir):
  return metrics.read_metrics(workdir)


def test_run_writes_everything_and_resume_after_kill_is_exact(cache, tmp_path, caplog):
  ref = tmp_path / "ref"
  with caplog.at_level(logging.DEBUG, "jax._src.compiler"), \
       caplog.at_level(logging.DEBUG, "jax._src.compilation_cache"):
    result = train.train_and_evaluate(_config(cache), ref)
  if runtime.resolve_compilation_cache("auto") is not None:  # on unless the user turned it off
    # the compiled round passes the cache's thresholds: written now, or loaded from an earlier run
    assert any(m.startswith(("Writing jit_program ", "Persistent compilation cache hit for "
                             "'jit_program'")) for m in caplog.messages)
  rows = _rows(ref)
  assert [r["round"] for r in rows] == [1, 2, 3, 4, 5, 6]
  assert set(rows[-1]["error"]) == {"2", "4"}
  assert all(0.0 <= e <= 1.0 for e in rows[-1]["error"].values())
  assert result["error"] == rows[-1]["error"]
  assert checkpoint.all_steps(ref) and checkpoint.latest_step(ref) == 6
  for name in ("summary.md", "config.json", "run_info.json", "plots/error_per_exit.png",
               "plots/tier_costs.png", "plots/accuracy_vs_depth.png"):
    assert (ref / name).stat().st_size > 0, name
  assert list((ref / "tensorboard").iterdir())
  # depth-2 clients cost less than depth-4 clients, and upload less
  t2, t4 = sorted(result["tiers"], key=lambda t: t["depth"])
  assert t2["flops_per_step"] < t4["flops_per_step"] and t2["upload_bytes"] < t4["upload_bytes"]

  # A damaged newest checkpoint (a data file cut short): --resume names it, sets it aside and
  # resumes from the newest intact one (round 4), writing the same metrics.
  damaged = tmp_path / "damaged"
  shutil.copytree(ref, damaged)
  for f in (checkpoint.checkpoint_dir(damaged) / "6" / "state" / "ocdbt.process_0" / "d").iterdir():
    if f.stat().st_size > 4096:
      with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size // 2)
  assert checkpoint.damage(damaged, 6).startswith("unreadable")
  train.train_and_evaluate(_config(cache), damaged, resume=True)
  assert _rows(damaged) == rows
  assert (damaged / checkpoint.DAMAGED_DIR / "6").is_dir()
  assert checkpoint.all_steps(damaged) == [4, 6] and checkpoint.damage(damaged, 6) is None

  # The same run as a separate process, killed (SIGKILL) once its round-2 checkpoint exists.
  run = tmp_path / "killed"
  env = dict(os.environ, FEDEXIT_CACHE=str(cache))
  args = [sys.executable, "-m", "fedexit_jax.cli", "run", "--workdir", str(run)] + [
      f"--config.{o}" for o in TINY]
  proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 300
  while checkpoint.latest_step(run) is None and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
  stopped_at = checkpoint.latest_step(run)
  assert stopped_at is not None and stopped_at < 6

  # Without --resume the workdir is refused; with it, the run continues to the same metrics.
  with pytest.raises(checkpoint.WorkdirError, match="--resume"):
    train.train_and_evaluate(_config(cache), run)
  train.train_and_evaluate(_config(cache), run, resume=True)
  assert _rows(run) == rows
  assert json.loads((run / "config.json").read_text()) == json.loads(
      (ref / "config.json").read_text())


def test_bad_config_fails_before_any_work(cache, tmp_path):
  with pytest.raises(config_utils.ConfigError, match="exit"):
    train.train_and_evaluate(_config(cache, ["model.exits=(2, 4, 9)"]), tmp_path / "w")
  assert not (tmp_path / "w" / "metrics.jsonl").exists()
