"""Conv features kept on disk between runs: made once, loaded bit for bit, a damaged or
mismatched file recomputed, the folder trimmed, and a pipeline run that loads them gets what it
would have computed."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from fedexit_jax import config_utils, feature_store, models, pipeline


def _maker(calls, seed=0):
  def make():
    calls.append(1)
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(5, 7, 3)).astype(np.float32), rng.random((5, 7)) > 0.5,
            rng.normal(size=(2, 7, 3)).astype(np.float32), np.ones((2, 7), bool))
  return make


def test_made_once_then_loaded_exactly(tmp_path):
  calls = []
  first = feature_store.load_or_make(tmp_path, "key", _maker(calls))
  again = feature_store.load_or_make(tmp_path, "key", _maker(calls))
  assert len(calls) == 1  # the second run read the file
  assert len(again) == 4
  for a, b in zip(first, again):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)  # stored as they were: exact by construction
  assert [p.name for p in tmp_path.iterdir()] == [feature_store.path_for(tmp_path, "key").name]
  feature_store.load_or_make(tmp_path, "other key", _maker(calls, seed=1))
  assert len(calls) == 2  # another key is another file
  assert len(list(tmp_path.glob("*.npz"))) == 2


def test_off_computes_every_time_and_writes_nothing(tmp_path):
  calls = []
  feature_store.load_or_make(None, "key", _maker(calls))
  feature_store.load_or_make(None, "key", _maker(calls))
  assert len(calls) == 2


def test_damaged_file_is_recomputed_and_rewritten(tmp_path, caplog):
  calls = []
  feature_store.load_or_make(tmp_path, "key", _maker(calls))
  path = feature_store.path_for(tmp_path, "key")
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])  # a run killed while copying the cache, say
  with caplog.at_level(logging.WARNING):
    out = feature_store.load_or_make(tmp_path, "key", _maker(calls))
  assert len(calls) == 2
  assert "unusable" in caplog.text and path.name in caplog.text
  np.testing.assert_array_equal(out[0], _maker([])()[0])
  assert path.stat().st_size == len(data)  # rewritten whole
  feature_store.load_or_make(tmp_path, "key", _maker(calls))
  assert len(calls) == 2


def test_a_file_that_fails_the_check_is_recomputed(tmp_path, caplog):
  calls = []
  feature_store.load_or_make(tmp_path, "key", _maker(calls))
  with caplog.at_level(logging.WARNING):
    feature_store.load_or_make(tmp_path, "key", _maker(calls), check=lambda a: "3 rows, not 5")
  assert len(calls) == 2 and "3 rows, not 5" in caplog.text


def test_unwritable_folder_only_costs_the_saving(tmp_path, caplog):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  calls = []
  with caplog.at_level(logging.WARNING):
    out = feature_store.load_or_make(blocker / "features", "key", _maker(calls))
  assert len(calls) == 1 and len(out) == 4
  assert "not kept" in caplog.text
  assert [p.name for p in tmp_path.iterdir()] == ["file"]  # no temporary file left behind


def test_features_larger_than_the_whole_cache_are_not_kept(tmp_path, monkeypatch, caplog):
  monkeypatch.setattr(feature_store, "MAX_BYTES", 600)  # the arrays above hold 637 bytes
  calls = []
  with caplog.at_level(logging.WARNING):
    out = feature_store.load_or_make(tmp_path, "key", _maker(calls))
  assert len(out) == 4 and not list(tmp_path.iterdir())
  assert "over its" in caplog.text


def test_trim_deletes_least_recently_used_first(tmp_path):
  paths = []
  for i in range(3):
    p = tmp_path / f"{i}.npz"
    p.write_bytes(b"x" * 100)
    os.utime(p, (1000 + i, 1000 + i))  # 0 is the oldest
    paths.append(p)
  os.utime(paths[0], (2000, 2000))  # ... until it is read again
  (tmp_path / "other.txt").write_bytes(b"x" * 1000)  # not a feature file: never counted
  gone = feature_store.trim(tmp_path, keep=paths[1], max_bytes=200)
  assert gone == [paths[2]]  # 1 is kept although older; 0 was used recently
  assert sorted(p.name for p in tmp_path.iterdir()) == ["0.npz", "1.npz", "other.txt"]
  assert feature_store.trim(tmp_path, max_bytes=150) == [paths[1]]
  assert feature_store.trim(tmp_path, max_bytes=100) == []


def test_resolve(tmp_path, monkeypatch):
  monkeypatch.setenv("FEDEXIT_CACHE", str(tmp_path / "root"))
  monkeypatch.delenv(feature_store.ENV, raising=False)
  assert feature_store.resolve("auto") == tmp_path / "root" / "features"
  assert feature_store.resolve(None) is None
  assert feature_store.resolve(str(tmp_path / "f")) == tmp_path / "f"
  assert feature_store.resolve("~/f") == Path.home() / "f"
  monkeypatch.setenv(feature_store.ENV, "off")
  assert feature_store.resolve("auto") is None
  monkeypatch.setenv(feature_store.ENV, str(tmp_path / "env"))
  assert feature_store.resolve("auto") == tmp_path / "env"
  assert feature_store.resolve(str(tmp_path / "f")) == tmp_path / "f"  # the config wins
  for bad in ("", True, 3):
    with pytest.raises(ValueError, match="feature_cache"):
      feature_store.resolve(bad)


def test_bad_config_value_is_a_config_error():
  config = config_utils.default_config()
  config.feature_cache = ""  # the config's type check lets only strings and None through
  with pytest.raises(config_utils.ConfigError, match="feature_cache"):
    config_utils.validate_config(config)


@pytest.mark.slow
def test_pipeline_loads_what_it_would_compute(tmp_path, monkeypatch):
  """A second process (the in-process memo cleared) loads the first one's features instead of
  running the CNN, and gets them exactly; other CNN weights are another file."""
  from test_train_e2e import TINY  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv("FEDEXIT_CACHE", str(tmp_path))
  monkeypatch.delenv(feature_store.ENV, raising=False)
  config = config_utils.apply_overrides(config_utils.default_config(), TINY)
  encoder = config_utils.validate_config(config)
  corpus = pipeline.load_corpus(config)
  encoder, mp, hp = pipeline.init_model(config, encoder, jax.random.key(0))
  _, frozen = models.split_params(mp, hp)
  monkeypatch.setitem(pipeline._MEMO, "features", {})  # pylint: disable=protected-access
  made = pipeline.utterance_features(config, encoder, frozen, corpus)
  assert len(list((tmp_path / "features").glob("*.npz"))) == 1

  def no_cnn(*args, **kwargs):
    raise AssertionError("the CNN ran although its features were on disk")
  pipeline._MEMO["features"].clear()  # pylint: disable=protected-access
  with monkeypatch.context() as m:
    m.setattr(models, "cache_features", no_cnn)
    loaded = pipeline.utterance_features(config, encoder, frozen, corpus)
  for a, b in zip(made, loaded):
    np.testing.assert_array_equal(a, b)

  pipeline._MEMO["features"].clear()  # pylint: disable=protected-access
  other = jax.tree.map(lambda x: x + 0.05, frozen)
  moved = pipeline.utterance_features(config, encoder, other, corpus)
  assert len(list((tmp_path / "features").glob("*.npz"))) == 2
  assert not np.allclose(moved[0], made[0])

  pipeline._MEMO["features"].clear()  # pylint: disable=protected-access
  off = config_utils.apply_overrides(config, ["feature_cache=None"])
  with monkeypatch.context() as m:
    m.setattr(models, "cache_features", no_cnn)
    with pytest.raises(AssertionError, match="the CNN ran"):
      pipeline.utterance_features(off, encoder, frozen, corpus)


def test_the_code_that_runs_the_cnn_is_part_of_the_key(tmp_path):
  from types import SimpleNamespace  # pylint: disable=import-outside-toplevel
  a, b = tmp_path / "a.py", tmp_path / "b.py"
  a.write_text("x = 1\n")
  b.write_text("y = 2\n")
  ma, mb = SimpleNamespace(__file__=str(a)), SimpleNamespace(__file__=str(b))
  before = feature_store.source_digest(ma, mb)
  assert feature_store.source_digest(ma, mb) == before
  a.write_text("x = 2\n")  # an upgrade or a fix of the CNN's code
  assert feature_store.source_digest(ma, mb) != before
