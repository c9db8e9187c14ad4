"""Our tfds builder: a folder -> ARRAY_RECORD -> tfds.data_source -> the same arrays, no TF."""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from fedexit_jax.data import speech_commands as sc
from fedexit_jax.data import tfds_builder
from test_data_speech_commands import make_mini_folder  # tests/ is on sys.path (rootdir-less)


def _by_file(d):
  o = np.argsort(d.files)
  return {k: np.asarray(getattr(d, k))[o] for k in
          ("waveforms", "lengths", "labels", "speakers", "splits", "files")}


def test_round_trip_through_array_record_without_tensorflow(tmp_path):
  root = make_mini_folder(str(tmp_path / "sc"))
  tfds_builder.prepare(root, tmp_path / "tfds", label_set="12")
  sources = tfds_builder.data_sources(tmp_path / "tfds", label_set="12")
  assert set(sources) == {"train", "validation", "test"}
  ex = sources["test"][0]
  assert ex["audio"].shape == (16000,) and ex["audio"].dtype == np.float32
  back = _by_file(tfds_builder.load(tmp_path / "tfds", label_set="12"))
  direct = _by_file(sc.load_folder(root, label_set="12", use_cache=False))
  for key, value in direct.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)
  assert "tensorflow" not in sys.modules


def test_unprepared_data_dir_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="prepare"):
    tfds_builder.data_sources(tmp_path / "empty", label_set="35")


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None,
                    reason="TensorFlow installed: the catalog path would download")
def test_catalog_builder_without_tensorflow_says_what_to_install():
  with pytest.raises(ImportError, match=r"fedexit_jax\[tf\]"):
    tfds_builder.load_catalog_speech_commands()
