"""Local training pieces: batch schedules, the three losses, masked no-op steps, FedProx, the
unfrozen feature encoder, central evaluation and feature caching."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedexit_jax.speech_model import SpeechExitModel
from fedexit_jax import models
from fedexit_jax import federated as fl
from fedexit_jax.federated import client as fc
from fedexit_jax.models import config as mconfig, early_exit, heads, wav2vec2

EXITS = (2, 4)
C = 8


pytestmark = pytest.mark.usefixtures("fast_compiles")


@pytest.fixture(scope="module")
def model():
  cfg = mconfig.small(hidden_size=16, intermediate_size=32, num_attention_heads=2,
                      conv_dim=(C,) * 7, num_hidden_layers=4, num_conv_pos_embeddings=4,
                      num_conv_pos_embedding_groups=2)
  full = wav2vec2.init_params(cfg, jax.random.key(0))
  head = heads.init_exit_heads(jax.random.key(1), 16, 3, len(EXITS))
  return cfg, full, head


def _batch(n=4, t=6, seed=0):
  rs = np.random.RandomState(seed)
  return fl.ClientData(jnp.asarray(rs.randn(n, t, C), jnp.float32), jnp.ones((n, t), bool),
                       jnp.asarray(rs.randint(0, 3, n), jnp.int32), jnp.ones(n, bool))


def test_epoch_schedule_real_examples_first_then_noop_batches():
  spec = fl.ClientSpec(SpeechExitModel(mconfig.small(), (3,)), batch_size=2, local_epochs=2)
  mask = jnp.array([True, True, True, False, False])
  idx, ok = fc.batch_schedule(spec, mask, jax.random.key(0))
  assert idx.shape == ok.shape == (6, 2)  # 2 epochs x ceil(5 / 2) batches
  np.testing.assert_array_equal(np.asarray(ok).sum(1), [2, 1, 0, 2, 1, 0])
  for epoch in (0, 1):
    seen = np.asarray(idx)[3 * epoch:3 * epoch + 3][np.asarray(ok)[3 * epoch:3 * epoch + 3]]
    assert sorted(seen.tolist()) == [0, 1, 2]  # every real example exactly once per epoch


def test_step_schedule_cycles_real_examples():
  spec = fl.ClientSpec(SpeechExitModel(mconfig.small(), (3,)), batch_size=2, local_steps=4)
  idx, ok = fc.batch_schedule(spec, jnp.array([False, True, True, True, False]), jax.random.key(1))
  assert bool(jnp.all(ok))
  counts = np.bincount(np.asarray(idx).ravel(), minlength=5)
  assert counts[0] == counts[4] == 0 and sorted(counts[1:4].tolist()) == [2, 3, 3]  # 8 = 3+3+2
  _, ok0 = fc.batch_schedule(spec, jnp.zeros(5, bool), jax.random.key(1))
  assert not bool(jnp.any(ok0))  # a client without data takes no real step


def test_losses_last_sum_and_depthfl_distillation(model):
  cfg, full, head = model
  params, _ = models.split_params(full, head)
  batch = _batch()
  batch = batch._replace(example_mask=jnp.array([True, True, True, False]))
  specs = {k: fl.ClientSpec(SpeechExitModel(cfg, EXITS), loss=k, distill_temperature=2.0) for k in fc.LOSSES}
  logits = np.asarray(fc.exit_outputs(specs["sum"], 4, params, batch), np.float64)  # [2, 4, 3]
  m = np.array([1, 1, 1, 0.0])
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ce = -np.take_along_axis(logp, np.asarray(batch.labels)[None, :, None], -1)[..., 0]
  ce = (ce * m).sum(-1) / 3  # padding example 3 excluded
  # "last" holds and computes only the head of its deepest exit (row 1 of the stack)
  last = specs["last"].slice_params(params, 4)
  assert jax.tree.leaves(last["heads"])[0].shape[0] == 1
  assert fc.exit_outputs(specs["last"], 4, last, batch).shape == (1, 4, 3)
  np.testing.assert_allclose(fc.data_loss(specs["last"], 4, last, batch), ce[1], rtol=1e-5)
  with pytest.raises(ValueError, match="2 stacked rows for the 1 exits"):
    fc.data_loss(specs["last"], 4, params, batch)  # the full stack would silently use exit 2's
  np.testing.assert_allclose(fc.data_loss(specs["sum"], 4, params, batch), ce.sum(), rtol=1e-5)
  q = logits / 2.0
  logq = q - np.log(np.exp(q).sum(-1, keepdims=True))
  kl01 = (np.exp(logq[1]) * (logq[1] - logq[0])).sum(-1)  # teacher exit 4 -> student exit 2
  kl10 = (np.exp(logq[0]) * (logq[0] - logq[1])).sum(-1)
  kd = 4.0 * ((kl01 + kl10) * m).sum() / 3  # T^2 * mean over real examples, /(n-1) = 1
  np.testing.assert_allclose(fc.data_loss(specs["distill"], 4, params, batch), ce.sum() + kd,
                             rtol=1e-5)
  # at depth 2 only exit 2 exists: no distillation partner
  np.testing.assert_allclose(fc.data_loss(specs["distill"], 2, params, batch),
                             fc.data_loss(specs["sum"], 2, params, batch), rtol=1e-6)


def test_empty_batch_is_a_noop_and_fedprox_pulls_towards_server(model):
  cfg, full, head = model
  params, _ = models.split_params(full, head)
  sliced = fl.slice_to_depth(SpeechExitModel(cfg, EXITS), params, 2)
  lr, mu = 0.1, 0.5
  plain = fl.ClientSpec(SpeechExitModel(cfg, EXITS), optax.sgd(lr))
  prox = fl.ClientSpec(SpeechExitModel(cfg, EXITS), optax.sgd(lr), prox_mu=mu)
  anchor = jax.tree.map(lambda x: x + 0.01, sliced)  # pretend the server copy differs
  batch = _batch()
  step = lambda spec, b: jax.jit(functools.partial(fl.client_step, spec, 2))(
      anchor, fl.client_init(spec, sliced), b)
  empty = step(plain, batch._replace(example_mask=jnp.zeros(4, bool)))
  for a, b in zip(jax.tree.leaves(empty.params), jax.tree.leaves(sliced)):
    np.testing.assert_array_equal(a, b)
  assert int(empty.num_steps) == 0
  a, b = step(plain, batch), step(prox, batch)
  assert int(a.num_steps) == 1
  # SGD on loss + mu/2 ||w - w_s||^2 differs by exactly -lr * mu * (w - w_s) = +lr * mu * 0.01
  for x, y in zip(jax.tree.leaves(b.params), jax.tree.leaves(a.params)):
    np.testing.assert_allclose(np.asarray(x) - np.asarray(y), lr * mu * 0.01, atol=2e-6)


def test_unfrozen_feature_encoder_trains_the_conv_stack(model):
  cfg, full, head = model
  params, frozen = models.split_params(full, head, train_feature_encoder=True)
  assert "feature_extractor" in params["backbone"] and not frozen
  spec = fl.ClientSpec(SpeechExitModel(cfg, EXITS, train_feature_encoder=True),
                       optax.sgd(0.1), local_steps=1, batch_size=2)
  rs = np.random.RandomState(0)
  wave = jnp.asarray(rs.randn(2, 1600), jnp.float32)
  data = fl.ClientData(wave, jnp.ones((2, 1600), bool), jnp.array([0, 2]), jnp.ones(2, bool))
  delta, m = jax.jit(functools.partial(fl.train_client, spec, 2))(
      spec.slice_params(params, 2), data, jax.random.key(0))
  assert bool(m.finite) and int(m.num_steps) == 1
  fe = jax.tree.leaves(delta["backbone"]["feature_extractor"])
  assert any(float(jnp.max(jnp.abs(x))) > 0 for x in fe)
  # deeper layers are not even part of the client's tree
  assert jax.tree.leaves(delta["backbone"]["encoder"]["layers"])[0].shape[0] == 2


def test_evaluate_and_cache_features(model):
  cfg, full, head = model
  params, frozen = models.split_params(full, head)
  rs = np.random.RandomState(1)
  waves = rs.randn(2, 5, 1200).astype(np.float32)  # [clients, examples, samples]
  feats, fmask = models.cache_features(cfg, frozen, waves, batch_size=4)
  direct, _ = wav2vec2.extract_features(cfg, full, waves.reshape(10, 1200))
  assert feats.shape == (2, 5) + direct.shape[1:] and fmask.shape == feats.shape[:3]
  np.testing.assert_allclose(feats.reshape(direct.shape), direct, atol=1e-5)
  x, fm = feats.reshape(direct.shape), fmask.reshape(10, -1)
  labels = rs.randint(0, 3, 10)
  ev = fl.evaluate(SpeechExitModel(cfg, EXITS), params, x, fm, labels, batch_size=4)  # 3 batches, last padded
  logits = early_exit.exit_logits(cfg, params["backbone"], params["heads"], x, fm, EXITS, 4)
  expect = 1.0 - (np.argmax(np.asarray(logits), -1) == labels[None]).mean(1)
  np.testing.assert_allclose(ev["error"], expect, rtol=1e-6)
  assert ev["correct"].shape == ev["confidence"].shape == (2, 10)
  with pytest.raises(ValueError, match="empty"):
    fl.evaluate(SpeechExitModel(cfg, EXITS), params, x[:0], fm[:0], labels[:0])


def test_time_mask_spans_by_hand():
  starts = jnp.array([[0, 1, 0, 0, 0, 1, 0], [1, 1, 0, 0, 0, 0, 1]], bool)
  np.testing.assert_array_equal(fc.spans(starts, 2).astype(int),
                                [[0, 1, 1, 0, 0, 1, 1], [1, 1, 1, 0, 0, 0, 1]])
  np.testing.assert_array_equal(fc.spans(starts, 1), starts)
  key = jax.random.key(0)
  assert not jnp.any(fc.time_mask(key, (3, 50), 0.0, 10))
  frac = float(jnp.mean(fc.time_mask(key, (64, 200), 0.05, 10)))
  assert 0.3 < frac < 0.5  # 1 - 0.95^10 = 0.40 of the frames, up to sampling


def test_augment_replaces_masked_frames_by_the_utterance_mean_and_needs_frames(model):
  import dataclasses  # pylint: disable=import-outside-toplevel
  spec = fl.ClientSpec(SpeechExitModel(model[0], EXITS), time_mask_prob=0.2, time_mask_span=3)
  rs = np.random.RandomState(0)
  x = rs.randn(4, 30, 5).astype(np.float32)
  valid = np.arange(30)[None] < np.array([30, 20, 10, 25])[:, None]
  batch = fl.ClientData(jnp.asarray(x), jnp.asarray(valid), jnp.zeros((4,), jnp.int32),
                        jnp.ones((4,), bool))
  out = np.asarray(fc.augment(spec, batch, jax.random.key(1)).inputs)
  masked = np.asarray(fc.time_mask(jax.random.key(1), (4, 30), 0.2, 3))
  assert 0 < masked.sum() < masked.size
  for u in range(4):
    mean = x[u][valid[u]].mean(0)  # over the utterance's valid frames only
    np.testing.assert_allclose(out[u][masked[u]], np.broadcast_to(mean, out[u][masked[u]].shape),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[u][~masked[u]], x[u][~masked[u]])
  assert fc.augment(dataclasses.replace(spec, time_mask_prob=0.0), batch, None) is batch
  with pytest.raises(ValueError, match="frame inputs"):
    fc.augment(spec, batch._replace(inputs=jnp.ones((4, 300))), jax.random.key(1))
  with pytest.raises(ValueError, match="time_mask_prob"):
    fl.ClientSpec(SpeechExitModel(model[0], EXITS), time_mask_prob=1.0)
