"""Conv features are computed once per utterance and gathered into the clients' padded rows:
equal to running the CNN on the padded client arrays, and memoised across runs in a process."""
from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from fedexit_jax import models
from fedexit_jax import config_utils, pipeline
from test_train_e2e import TINY

pytestmark = pytest.mark.slow


def test_gathered_features_equal_per_row_features(tmp_path_factory):
  os.environ["FEDEXIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
  config = config_utils.apply_overrides(config_utils.default_config(), TINY)
  encoder = config_utils.validate_config(config)
  corpus = pipeline.load_corpus(config)
  assert pipeline.load_corpus(config) is corpus  # memoised on the data config
  encoder, mp, hp = pipeline.init_model(config, encoder, jax.random.key(0))
  params, frozen = models.split_params(mp, hp)
  data = pipeline.federated_data(config, encoder, frozen, corpus)
  cd = pipeline.partition_clients(config, corpus.train)
  direct, dmask = models.cache_features(encoder, frozen, cd.waveforms, None, batch_size=16)
  real = cd.example_mask
  assert real.sum() == len(corpus.train.labels)  # every training utterance is some client's
  np.testing.assert_allclose(data.clients.inputs[real], direct[real], atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(data.clients.input_mask[real], dmask[real])
  assert not np.any(data.clients.inputs[~real])  # padding rows carry zeros
  np.testing.assert_array_equal(data.clients.labels, cd.labels)
  tdirect, _ = models.cache_features(encoder, frozen, corpus.test.waveforms, None, batch_size=16)
  np.testing.assert_allclose(data.test_inputs, tdirect, atol=1e-5, rtol=1e-5)
  # another seed (another partition) reuses the same utterance features
  other = config_utils.apply_overrides(config, ["seed=1"])
  again = pipeline.federated_data(other, encoder, frozen, pipeline.load_corpus(other))
  assert again.test_inputs is data.test_inputs
