"""Every task end to end on its offline corpus (eSpeak, written in the real corpus's layout and read
back by the real loader): 2 rounds of the real pipeline on a tiny backbone write metrics.jsonl with
the task's metrics per exit, summary.md, plots and checkpoints, and resume exactly."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from fedexit_jax import config_utils, metrics, train

pytestmark = pytest.mark.slow

from test_train_e2e import TINY  # pylint: disable=wrong-import-position

# test_train_e2e's tiny backbone and tiers (exits 2/4), without its keyword-corpus sizes
TINY_MODEL = [o for o in TINY if not o.startswith(("data.", "rounds=", "checkpoint_every=",
                                                  "clients_per_round=", "batch_size="))] + [
    "rounds=2", "checkpoint_every=1", "batch_size=4", "local_epochs=1", "data.max_seconds=2.0"]

TASKS = {
    "sid": ["data.num_speakers=4", "data.per_speaker=5", "data.verify_speakers=3",
            "data.num_trials=12", "data.num_clients=4", "clients_per_round=2"],
    "er": ["data.num_sessions=2", "data.per_speaker=6", "data.test_session=2",
           "clients_per_round=2"],
    "asr": ["data.num_speakers=5", "data.per_speaker=3", "data.test_fraction=0.4",
            "data.max_seconds=4.0", "clients_per_round=2"],  # longer sentences are left out
}
METRICS = {"sid": {"error", "eer"}, "er": {"error"},
           "asr": {"wer", "cer", "wer_lexicon", "cer_lexicon"}}  # configs/asr.py decodes both ways


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


def _config(cache, task):
  os.environ["FEDEXIT_CACHE"] = str(cache)
  base = config_utils.load_config(config_utils.configs_dir() / f"{task}.py")
  return config_utils.apply_overrides(base, TINY_MODEL + TASKS[task])


@pytest.mark.parametrize("task", sorted(TASKS))
def test_task_runs_two_rounds_and_writes_its_metrics(cache, tmp_path, task):
  config = _config(cache, task)
  result = train.train_and_evaluate(config, tmp_path / "run")
  rows = metrics.read_metrics(tmp_path / "run")
  assert [r["round"] for r in rows] == [1, 2]
  for name in METRICS[task]:
    for r in rows:
      assert set(r[name]) == {"2", "4"}, (name, r)  # both tiers' exits, no untrained head
      assert all(0.0 <= v <= (2.0 if name[:3] in ("wer", "cer") else 1.0)  # counts insertions
                 for v in r[name].values()), (name, r[name])
    assert result[name] == rows[-1][name]
  assert all(np.isfinite(v) for r in rows for v in r["test_loss"].values())
  summary = (tmp_path / "run" / "summary.md").read_text()
  for name in METRICS[task]:
    assert f"## Test {name} per exit" in summary
    assert (tmp_path / "run" / "plots" / f"{name}_per_exit.png").is_file()
  # each tier's figures at its own exit (the deep tier's at exit 4)
  tier1 = [line for line in summary.splitlines() if line.startswith("| tier 1 | ")]
  assert len(tier1) == 1 and tier1[0].startswith("| tier 1 | 4 | 4 | ")
  assert all(f"{100 * rows[-1][m]['4']:.2f}" in tier1[0] for m in METRICS[task])
  if task != "asr":  # classification: the confidence-threshold early-exit policy
    assert "## Early-exit inference" in summary
  # resuming the finished run restores the last checkpoint and reports the same numbers
  again = train.train_and_evaluate(config, tmp_path / "run", resume=True)
  for name in METRICS[task]:
    assert again[name] == result[name]


def test_kws35_offline_has_35_classes_and_runs(cache, tmp_path):
  """configs/kws35.py: the offline speakers say all 35 words; the head has 35 classes."""
  os.environ["FEDEXIT_CACHE"] = str(cache)
  base = config_utils.load_config(config_utils.configs_dir() / "kws35.py")
  config = config_utils.apply_overrides(base, TINY_MODEL + [
      "data.num_speakers=8", "data.per_word=1", "data.test_fraction=0.25", "data.num_clients=4",
      "clients_per_round=2", "data.clip_seconds=0.5"])
  result = train.train_and_evaluate(config, tmp_path / "run")
  info = (tmp_path / "run" / "run_info.json").read_text()
  assert set(result["error"]) == {"2", "4"}
  counts = np.asarray(json.loads(info)["partition"]["label_counts"])
  assert counts.shape[1] == 35 and (counts.sum(0) > 0).sum() == 35  # every word is a client's


def test_scenarios_runner_compares_the_tasks_primary_metric(cache, tmp_path, capsys):
  """paper_scenarios.py on the ASR task compares WER (its primary metric), paired by seed."""
  sys.path.insert(0, str(config_utils.configs_dir().parent / "experiments"))
  import paper_scenarios as ps  # pylint: disable=import-outside-toplevel
  os.environ["FEDEXIT_CACHE"] = str(cache)
  args = ["--config", str(config_utils.configs_dir() / "asr.py"), "--workdir", str(tmp_path),
          "--seeds", "0", "--only", "paper,fedavg_naive"]
  args += [f"--config.{o}" for o in TINY_MODEL + TASKS["asr"]
           if not o.startswith(("eval_every=", "progress_bar="))]
  assert ps.main(args) == 0
  table = (tmp_path / "scenarios.md").read_text()
  assert "Test wer % (mean" in table and "| paper | layer-wise, Eq. 1 | 2/4 |" in table
  res = json.loads((tmp_path / "scenarios.json").read_text())["results"]
  wer = metrics.read_metrics(tmp_path / "seed0" / "paper")[-1]["wer"]
  assert res["paper"]["0"]["error"] == wer  # the compared numbers are the run's WER


def test_trained_feature_encoder_runs_and_evaluates_on_waveforms(cache, tmp_path):
  """model.freeze_feature_encoder=False: clients and the evaluation run the CNN on waveforms
  (with its group norm over each utterance's own samples)."""
  config = config_utils.apply_overrides(_config(cache, "er"),
                                        ["model.freeze_feature_encoder=False", "rounds=1"])
  result = train.train_and_evaluate(config, tmp_path / "run")
  assert set(result["error"]) == {"2", "4"}
  assert all(0.0 <= v <= 1.0 for v in result["error"].values())


def test_time_masking_runs_end_to_end(cache, tmp_path):
  """time_mask_prob through the real pipeline (accounting's step included): ASR, 2 rounds."""
  config = config_utils.apply_overrides(_config(cache, "asr"), ["time_mask_prob=0.1",
                                                                "time_mask_span=3"])
  result = train.train_and_evaluate(config, tmp_path / "run")
  rows = metrics.read_metrics(tmp_path / "run")
  assert [r["round"] for r in rows] == [1, 2] and all(np.isfinite(r["train_loss"]) for r in rows)
  assert set(result["wer"]) == {"2", "4"}


def test_gru_frame_heads_run_end_to_end(cache, tmp_path):
  """model.frame_head_rnn through the real pipeline (accounting, aggregation, checkpoints):
  ASR, 1 round; resuming the finished run re-evaluates the restored GRU heads to the same
  figures."""
  config = config_utils.apply_overrides(_config(cache, "asr"), ["model.frame_head_rnn=8",
                                                                "rounds=1"])
  result = train.train_and_evaluate(config, tmp_path / "run")
  rows = metrics.read_metrics(tmp_path / "run")
  assert [r["round"] for r in rows] == [1] and np.isfinite(rows[0]["train_loss"])
  assert set(result["wer"]) == {"2", "4"}
  plain = train.train_and_evaluate(
      config_utils.apply_overrides(_config(cache, "asr"), ["rounds=1"]), tmp_path / "plain")
  # each tier uploads its deepest head: the GRU's two directions (128 conv channels in, 8 units)
  # in float32, while the output layer reads 16 features instead of 128 (29 CTC symbols)
  extra = 4 * (2 * (128 * 24 + 8 * 24 + 24 + 8) - (128 - 16) * 29)
  assert [t["upload_bytes"] - p["upload_bytes"] for t, p in zip(result["tiers"], plain["tiers"])
          ] == [extra, extra]
  again = train.train_and_evaluate(config, tmp_path / "run", resume=True)
  for name in ("wer", "cer", "wer_lexicon", "cer_lexicon"):
    assert again[name] == result[name]


def test_central_exit_trains_one_exit_on_the_pooled_data(cache, capsys):
  """experiments/central_exit.py on the tiny ASR corpus: one JSON row per evaluation with the
  task's metrics at the chosen exit; an exit layer that is not one is a clear error."""
  sys.path.insert(0, str(config_utils.configs_dir().parent / "experiments"))
  import central_exit  # pylint: disable=import-outside-toplevel
  os.environ["FEDEXIT_CACHE"] = str(cache)
  args = ["--config", str(config_utils.configs_dir() / "asr.py"), "--depth", "2", "--steps", "4",
          "--every", "2", "--learning-rate", "1e-3"]
  args += [f"--config.{o}" for o in TINY_MODEL + TASKS["asr"]]
  assert central_exit.main(args) == 0
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()
          if line.startswith("{")]
  assert [r["step"] for r in rows] == [2, 4]
  for r in rows:
    assert np.isfinite(r["train_loss"]) and 0.0 <= r["cer"] <= 2.0 and 0.0 <= r["wer"] <= 2.0
  with pytest.raises(SystemExit):
    central_exit.main(args[:2] + ["--depth", "3"] + args[4:])
  assert "--depth 3 is not an exit layer" in capsys.readouterr().err


def test_cross_test_and_word_score_choice_on_finished_runs(cache, tmp_path, capsys):
  """experiments/cross_test.py: two seeds' finished ASR runs, scored on their own config's test
  set, give back each run's own final metrics; the pairing reads b - a per metric and exit; a
  run of another model is a clear error. experiments/choose_word_score.py reads the same runs'
  exits once per word score and picks the lowest mean lexicon WER."""
  sys.path.insert(0, str(config_utils.configs_dir().parent / "experiments"))
  import cross_test  # pylint: disable=import-outside-toplevel
  runs = []
  for seed in (0, 1):
    config = config_utils.apply_overrides(_config(cache, "asr"), [f"seed={seed}"])
    train.train_and_evaluate(config, tmp_path / f"s{seed}")
    runs.append(tmp_path / f"s{seed}")
  args = ["--config", str(config_utils.configs_dir() / "asr.py")]
  args += [f"--config.{o}" for o in TINY_MODEL + TASKS["asr"]]
  assert cross_test.main(args + ["--a", str(runs[0]), "--b", str(runs[1])]) == 0
  lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
  scored = {l["run"]: l for l in lines if "run" in l}
  for run in runs:
    own = metrics.read_metrics(run)[-1]
    assert scored[str(run)]["round"] == 2
    for name in METRICS["asr"]:  # the lexicon-decoded ones too (extra_metrics)
      assert set(scored[str(run)][name]) == {"2", "4"}
      for e, v in own[name].items():  # the same model on the same sentences
        assert scored[str(run)][name][e] == pytest.approx(100 * v, abs=1e-6)
  diffs = {(l["metric"], l["exit"]): l for l in lines if "metric" in l}
  assert set(diffs) == {(m, e) for m in METRICS["asr"] for e in ("2", "4")}
  for (m, e), row in diffs.items():
    assert row["b_minus_a"] == pytest.approx(scored[str(runs[1])][m][e] - scored[str(runs[0])][m][e])
    assert row["verdict"] == "one seed: no verdict"
  with pytest.raises(SystemExit):  # another head width: not this config's model
    cross_test.main(args + ["--config.model.frame_head_kernel=5", "--a", str(runs[0])])
  assert "not this config's model" in capsys.readouterr().err

  # experiments/choose_word_score.py on the same runs (their own test set as the development set
  # here): the row at the config's word score is each run's own lexicon figure; the choice is
  # the lowest mean over runs and exits
  import choose_word_score  # pylint: disable=import-outside-toplevel
  own_score = _config(cache, "asr").decode.word_score
  grid = sorted({-1.0, own_score, 2.0})
  assert choose_word_score.main(args + ["--runs", *map(str, runs),
                                        "--grid", *map(str, grid)]) == 0
  lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
  rows = {(l["word_score"], l["run"]): l for l in lines if "run" in l}
  assert set(rows) == {(w, str(r)) for w in grid for r in runs}
  for run in runs:
    own = metrics.read_metrics(run)[-1]
    for m in ("wer_lexicon", "cer_lexicon"):
      assert set(rows[(own_score, str(run))][m]) == {"2", "4"}
      for e, v in own[m].items():
        assert rows[(own_score, str(run))][m][e] == pytest.approx(100 * v, abs=1e-6)
  means = {l["word_score"]: l["mean_wer_lexicon"] for l in lines if "mean_wer_lexicon" in l}
  exact = {w: np.mean([rows[(w, str(r))]["wer_lexicon"][e] for r in runs for e in ("2", "4")])
           for w in grid}  # the printed means are rounded; the choice is made on these
  assert lines[-1] == {"chosen": min(grid, key=lambda w: (exact[w], abs(w), w))}
  for w in grid:
    assert means[w] == pytest.approx(exact[w], abs=1e-3)
  for bad, why in ((["--config.decode.lexicon="], "decode.lexicon is off"),
                   (["--config", str(config_utils.configs_dir() / "kws12.py")], "an ASR config")):
    with pytest.raises(SystemExit):
      choose_word_score.main(args + bad + ["--runs", str(runs[0])])
    assert why in capsys.readouterr().err
