"""The DrJAX baseline of benchmarks/ computes the same round as the engine: same clients, keys,
local training and n_i * L_i per-layer mean, written with drjax.map_fn / reduce_sum."""
from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

pytest.importorskip("drjax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed
from benchmarks import drjax_baseline  # pylint: disable=g-import-not-at-top

from fedexit_jax.speech_model import SpeechExitModel
from fedexit_jax import federated as fl  # pylint: disable=g-import-not-at-top
from fedexit_jax import models
from fedexit_jax.models import config as mconfig, heads, wav2vec2

EXITS, CLASSES, N, T, C = (2, 4), 5, 6, 8, 16


def test_drjax_round_equals_the_engine_round():
  cfg = mconfig.small(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                      conv_dim=(C,) * 7, num_hidden_layers=4, num_conv_pos_embeddings=4,
                      num_conv_pos_embedding_groups=2)
  params, _ = models.split_params(wav2vec2.init_params(cfg, jax.random.key(0)),
                                  heads.init_exit_heads(jax.random.key(1), 32, CLASSES, 2))
  spec = fl.RoundSpec(fl.ClientSpec(SpeechExitModel(cfg, EXITS), optax.sgd(0.1),
                                    local_epochs=2, batch_size=4),
                      weighting="paper", depth_levels=EXITS, chunk_size=1)
  rs = np.random.RandomState(0)
  sizes = rs.randint(1, N + 1, size=6)
  data = fl.ClientData(rs.randn(6, N, T, C).astype(np.float32), np.ones((6, N, T), bool),
                       rs.randint(0, CLASSES, (6, N)).astype(np.int32),
                       np.arange(N)[None] < sizes[:, None])
  cohort = fl.cohort_from_dataset(data, np.arange(6), np.array([2, 4, 2, 4, 4, 2]))
  state = fl.init_server_state(params, spec.server_optimizer, jax.random.key(2))
  engine, _ = fl.run_round(state, cohort, spec)
  drjax_state = drjax_baseline.run_round(state, cohort, spec)
  for a, b in zip(jax.tree.leaves(engine.params), jax.tree.leaves(drjax_state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6)
  moved = [float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
           for a, b in zip(jax.tree.leaves(drjax_state.params), jax.tree.leaves(params))]
  assert max(moved) > 1e-4  # the round really trained
