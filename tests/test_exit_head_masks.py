"""An exit head is averaged over the clients whose loss trained it, under every weighting.

One round, a depth-3 and a depth-6 client, FedAvg at server lr 1 (so the new params are the old
ones plus the masked mean of the deltas). With the paper's loss (deepest exit only) the depth-6
client computes no exit-3 logits, so the exit-3 head must come out exactly as the depth-3 client
alone gives it; with the summed loss both clients trained it and both count.
"""
import functools

import jax
import numpy as np
import optax
import pytest

from fedexit_jax.speech_model import SpeechExitModel
from fedexit_jax import models
from fedexit_jax import accounting
from fedexit_jax import federated as fl
from fedexit_jax.federated import aggregate, trees
from fedexit_jax.models import config as mconfig, heads, wav2vec2

EXITS = (3, 6)
CLASSES, N, T, C = 4, 4, 6, 8

pytestmark = pytest.mark.usefixtures("fast_compiles")


@pytest.fixture(scope="module")
def setup():
  cfg = mconfig.small(hidden_size=16, intermediate_size=32, num_attention_heads=2,
                      conv_dim=(C,) * 7, num_hidden_layers=6, num_conv_pos_embeddings=4,
                      num_conv_pos_embedding_groups=2)
  params, _ = models.split_params(wav2vec2.init_params(cfg, jax.random.key(0)),
                              heads.init_exit_heads(jax.random.key(1), 16, CLASSES, len(EXITS)))
  rs = np.random.RandomState(0)
  data = fl.ClientData(rs.randn(2, N, T, C).astype(np.float32), np.ones((2, N, T), bool),
                       rs.randint(0, CLASSES, (2, N)).astype(np.int32),
                       np.array([[True] * 4, [True] * 3 + [False]]))  # n = 4 and 3
  return cfg, params, data


OPT, SERVER = optax.sgd(0.5), fl.server_optimizer("fedavg", 1.0)  # one object: no recompiles


@functools.lru_cache(maxsize=None)
def _spec(cfg, loss, weighting):
  client = fl.ClientSpec(SpeechExitModel(cfg, EXITS), OPT, loss=loss, local_steps=2, batch_size=2)
  return fl.RoundSpec(client, SERVER, weighting=weighting, depth_levels=EXITS, chunk_size=1)


def _round(setup, loss, weighting, ids):
  """(new params - old params, metrics) of one round of the cohort `ids` (client 0 has depth 3,
  client 1 depth 6). A one-client cohort's mean is its own delta under any weighting."""
  cfg, params, data = setup
  spec = _spec(cfg, loss, weighting if len(ids) > 1 else "paper")
  state = fl.init_server_state(params, spec.server_optimizer, jax.random.key(7))
  new, m = fl.run_round(state, fl.cohort_from_dataset(data, ids, np.array([3, 6])), spec)
  return jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), new.params, params), m


def _head(delta, row):
  return np.concatenate([delta["heads"]["kernel"][row].ravel(), delta["heads"]["bias"][row]])


@pytest.mark.parametrize("weighting", ["paper", "samples", "uniform", "depth"])
def test_deepest_loss_exit3_head_is_the_depth3_clients_alone(setup, weighting):
  both, m = _round(setup, "last", weighting, [0, 1])
  alone3, _ = _round(setup, "last", weighting, [0])
  alone6, _ = _round(setup, "last", weighting, [1])
  assert np.abs(_head(alone3, 0)).max() > 1e-4  # the depth-3 client did move its head
  np.testing.assert_allclose(_head(both, 0), _head(alone3, 0), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(_head(both, 1), _head(alone6, 1), rtol=1e-5, atol=1e-7)
  # layers 4-6: the depth-6 client alone; layers 1-3: both, with the scheme's weights
  lay = lambda d: d["backbone"]["encoder"]["layers"]["attention"]["q_proj"]["kernel"]
  np.testing.assert_allclose(lay(both)[3:], lay(alone6)[3:], rtol=1e-5, atol=1e-7)
  w = np.asarray(m["weight"])
  np.testing.assert_allclose(w, aggregate.client_weights(weighting, np.array([4.0, 3.0]),
                                                         np.array([3, 6])), rtol=1e-6)
  mix = (w[0] * lay(alone3)[:3] + w[1] * lay(alone6)[:3]) / w.sum()
  np.testing.assert_allclose(lay(both)[:3], mix, rtol=1e-4, atol=1e-7)


def test_summed_loss_counts_both_clients_for_exit3(setup):
  both, m = _round(setup, "sum", "paper", [0, 1])
  alone3, _ = _round(setup, "sum", "paper", [0])
  alone6, _ = _round(setup, "sum", "paper", [1])
  w = np.asarray(m["weight"])  # n_i * L_i = 4*3, 3*6
  np.testing.assert_allclose(w, [12.0, 18.0])
  expect = (12.0 * _head(alone3, 0) + 18.0 * _head(alone6, 0)) / 30.0
  np.testing.assert_allclose(_head(both, 0), expect, rtol=1e-4, atol=1e-7)
  assert np.abs(_head(both, 0) - _head(alone3, 0)).max() > 1e-5  # the depth-6 client counted


def test_naive_fedavg_still_dilutes_the_head_it_did_not_train(setup):
  # The hetero-FedAvg baseline averages every client's whole model, untouched parts included.
  both, m = _round(setup, "last", "fedavg_naive", [0, 1])
  alone3, _ = _round(setup, "last", "fedavg_naive", [0])
  np.testing.assert_allclose(_head(both, 0), 4.0 / 7.0 * _head(alone3, 0), rtol=1e-5, atol=1e-7)


def test_deepest_client_holds_and_uploads_only_its_head(setup):
  cfg, params, _ = setup
  last = fl.ClientSpec(SpeechExitModel(cfg, EXITS), loss="last")
  summed = fl.ClientSpec(SpeechExitModel(cfg, EXITS), loss="sum")
  assert last.heads_at(6) == (6,) and summed.heads_at(6) == (3, 6)
  assert jax.tree.leaves(last.slice_params(params, 6)["heads"])[0].shape[0] == 1
  head_row = accounting.tree_bytes(jax.tree.map(lambda x: x[0], params["heads"]))
  assert (accounting.upload_bytes(params, 6, EXITS)
          - accounting.upload_bytes(params, 6, EXITS, deepest_only=True)) == head_row
  assert trees.trained_exits(EXITS, [6, 6], deepest_only=True) == (6,)
  assert trees.trained_exits(EXITS, [3, 6], deepest_only=True) == (3, 6)
  assert trees.trained_exits((3, 6, 9, 12), [6], deepest_only=False) == (3, 6)
  mask = trees.depth_mask(last.model, params, 6, deepest_only=True)
  np.testing.assert_array_equal(mask["heads"]["bias"].ravel(), [0.0, 1.0])


def test_evaluate_reports_only_requested_heads(setup):
  cfg, params, data = setup
  x, fm, labels = data.inputs[0], data.input_mask[0], data.labels[0]
  model = SpeechExitModel(cfg, EXITS)
  full = fl.evaluate(model, params, x, fm, labels)
  only6 = fl.evaluate(model, params, x, fm, labels, heads_at=(6,))
  assert only6["error"].shape == (1,)
  np.testing.assert_allclose(only6["loss"], full["loss"][1:], rtol=1e-5)
  with pytest.raises(ValueError, match="heads_at"):
    fl.evaluate(model, params, x, fm, labels, heads_at=(9,))
