"""The SUPERB keyword-spotting protocol: a v0.01-layout training folder plus the separate
balanced 12-class test archive, read from tiny fixtures written in the real layouts."""
from __future__ import annotations

import os

import numpy as np
import pytest

from fedexit_jax import config_utils, pipeline
from fedexit_jax.data import audio
from fedexit_jax.data import speech_commands as sc
from test_data_speech_commands import make_mini_folder


def make_test_archive(root, extra_folder=None, corrupt=False):
  """speech_commands_test_set layout: <label>/<file>.wav, _silence_ and _unknown_ included."""
  files = {"yes": ["aaaa0001_nohash_0.wav", "bbbb0002_nohash_1.wav"],
           "stop": ["cccc0003_nohash_0.wav"], "_unknown_": ["dddd0004_nohash_0.wav"],
           "_silence_": ["silence_0.wav"]}
  if extra_folder:
    files[extra_folder] = ["eeee0005_nohash_0.wav"]
  rng = np.random.default_rng(0)
  for label, names in files.items():
    os.makedirs(os.path.join(root, label), exist_ok=True)
    for name in names:
      audio.write_wav(os.path.join(root, label, name), 0.1 * rng.standard_normal(8000))
  if corrupt:
    with open(os.path.join(root, "yes", "ffff0006_nohash_0.wav"), "wb") as f:
      f.write(b"RIFF not really")
  return root


def test_archive_labels_speakers_and_lengths(tmp_path):
  d = sc.load_test_archive(make_test_archive(str(tmp_path / "t")))
  names = [sc.LABELS_12[i] for i in d.labels]
  assert sorted(names) == sorted(["yes", "yes", "stop", "_unknown_", "_silence_"])
  assert d.speakers[d.files.tolist().index("_silence_/silence_0.wav")] == ""
  assert d.speakers[d.files.tolist().index("yes/bbbb0002_nohash_1.wav")] == "bbbb0002"
  assert set(d.splits.tolist()) == {"test"} and d.waveforms.shape == (5, 16000)
  assert np.all(d.lengths == 8000)  # half-second clips, zero-padded to 1 s


def test_archive_bad_inputs(tmp_path):
  with pytest.raises(ValueError, match=r"folders \['bird'\] are not labels"):
    sc.load_test_archive(make_test_archive(str(tmp_path / "a"), extra_folder="bird"))
  with pytest.raises(audio.AudioError, match="ffff0006"):
    sc.load_test_archive(make_test_archive(str(tmp_path / "b"), corrupt=True))
  skipped = sc.load_test_archive(str(tmp_path / "b"), skip_errors=True)
  assert skipped.num_skipped == 1 and len(skipped.labels) == 5
  with pytest.raises(FileNotFoundError, match="does not exist"):
    sc.load_test_archive(str(tmp_path / "missing"))


def test_pipeline_uses_the_archive_as_test_set(tmp_path):
  train_dir = make_mini_folder(str(tmp_path / "sc"))
  test_dir = make_test_archive(str(tmp_path / "test_set"))
  config = config_utils.apply_overrides(config_utils.default_config(), [
      "data.source=folder", f"data.dir={train_dir}", f"data.test_dir={test_dir}",
      "progress_bar=False"])
  corpus = pipeline.load_corpus(config)
  assert len(corpus.test.labels) == 5 and corpus.test.files[0].startswith(("_", "stop", "yes"))
  assert set(corpus.train.splits.tolist()) == {"train"}
  bad = config_utils.apply_overrides(config_utils.default_config(),
                                     [f"data.test_dir={test_dir}"])
  with pytest.raises(config_utils.ConfigError, match="data.test_dir"):
    config_utils.validate_config(bad)
