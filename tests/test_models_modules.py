"""The Flax NNX modules used directly, as a user outside federated runs would: build, apply to a
depth, read hidden states, take a gradient; the functional API is the same computation; the
shipped checkpoints still load and give the hidden states of the pre-module encoder."""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fedexit_jax import convert
from fedexit_jax import models
from fedexit_jax.models import config as mconfig
from fedexit_jax.models import early_exit, modules, wav2vec2

EXITS, CLASSES = (1, 2, 3), 4
REFERENCE = Path(__file__).parent / "data" / "builtin_hidden_reference.npz"


def tiny():
  return mconfig.small(hidden_size=32, intermediate_size=48, num_attention_heads=4,
                       num_hidden_layers=3, conv_dim=(16,) * 7, num_conv_pos_embeddings=8,
                       num_conv_pos_embedding_groups=4)


def _wave(b=2, s=3200, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal((b, s)), jnp.float32)


def test_module_applies_to_a_depth_and_equals_the_functional_api():
  cfg = tiny()
  model = modules.SpeechEarlyExit(cfg, EXITS, CLASSES, rngs=nnx.Rngs(0))
  wave = _wave()
  mask = jnp.ones(wave.shape, bool).at[1, 2400:].set(False)
  logits = nnx.jit(lambda m, w, k: m(w, k, depth=2))(model, wave, mask)  # as users should: jit
  assert logits.shape == (2, 2, CLASSES)  # exits 1 and 2 at depth 2
  encode = nnx.jit(lambda m, w, k, depth: m.backbone(w, k, depth=depth), static_argnums=3)
  hidden = encode(model, wave, mask, 3)
  t = cfg.num_frames(3200)
  assert hidden.shape == (3, 2, t, 32)
  params = nnx.to_pure_dict(nnx.state(model))
  assert set(params) == {"backbone", "heads"}
  assert params["backbone"]["encoder"]["layers"]["attention"]["q_proj"]["kernel"].shape == (3, 32, 32)
  np.testing.assert_allclose(hidden, wav2vec2.encode(cfg, params["backbone"], wave, mask, 3),
                             atol=1e-6, rtol=1e-6)
  feats, fmask = wav2vec2.extract_features(cfg, params["backbone"], wave, mask)
  np.testing.assert_allclose(
      logits, early_exit.exit_logits(cfg, params["backbone"], params["heads"], feats, fmask, EXITS, 2),
      atol=1e-5, rtol=1e-5)
  # depth d < L: the first d hidden states of the full pass
  np.testing.assert_allclose(encode(model, wave, mask, 1), hidden[:1], atol=1e-6, rtol=1e-6)
  with pytest.raises(ValueError, match="depth must be an int in"):
    model(wave, depth=4)


def test_init_follows_transformers_scheme():
  cfg = mconfig.small(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                      num_conv_pos_embedding_groups=4)
  p = models.init_params(cfg, jax.random.key(0))
  q = np.asarray(p["encoder"]["layers"]["attention"]["q_proj"]["kernel"])
  assert q.shape == (12, 64, 64) and abs(q.std() - 0.02) < 0.001  # N(0, 0.02^2)
  assert not np.any(np.asarray(p["encoder"]["layers"]["attention"]["q_proj"]["bias"]))
  assert np.all(np.asarray(p["encoder"]["layers"]["layer_norm"]["scale"]) == 1.0)
  conv0 = np.asarray(p["feature_extractor"]["conv_layers"]["0"]["conv"]["kernel"])  # [10, 1, C]
  assert abs(conv0.std() - np.sqrt(2.0 / 10)) < 0.05 * np.sqrt(2.0 / 10)  # Kaiming normal
  v, g = p["encoder"]["pos_conv"]["weight_v"], p["encoder"]["pos_conv"]["weight_g"]
  np.testing.assert_allclose(g, np.sqrt((np.asarray(v) ** 2).sum(axis=(1, 2))), rtol=1e-5)
  # the rows of the stacked layers are independent draws
  assert not np.allclose(q[0], q[1])


def test_a_user_takes_a_gradient_step_on_the_module():
  cfg = tiny()
  model = modules.SpeechEarlyExit(cfg, EXITS, CLASSES, rngs=nnx.Rngs(1))
  wave, labels = _wave(4, 2400, seed=3), jnp.array([0, 1, 2, 3])

  def loss_fn(m):
    logp = jax.nn.log_softmax(m(wave, depth=3), axis=-1)  # [3, B, C]
    return -jnp.mean(jnp.take_along_axis(logp, labels[None, :, None], axis=-1))

  before, grads = nnx.jit(nnx.value_and_grad(loss_fn))(model)
  g = nnx.to_pure_dict(grads)
  assert np.any(np.asarray(g["backbone"]["encoder"]["layers"]["feed_forward"]["output_dense"]["kernel"][2]))
  nnx.update(model, jax.tree.map(lambda p, d: p - 0.05 * d, nnx.to_pure_dict(nnx.state(model)), g))
  assert float(nnx.jit(loss_fn)(model)) < float(before)


@pytest.mark.parametrize("name", ["small_ssl", "small_ssl_hubert"])
def test_shipped_checkpoints_load_and_match_the_previous_encoder(name):
  # Reference: the first 4 frames of every layer's hidden state, from the functional encoder that
  # preceded the modules (wav2vec2.encode at commit 4f04647, on this input), stored in
  # tests/data/builtin_hidden_reference.npz.
  ref = np.load(REFERENCE)[name]  # [12, 2, 4, H]
  model = convert.load_early_exit(f"builtin:{name}", (3, 6, 9, 12), num_classes=12)
  wave = (0.1 * np.random.default_rng(7).standard_normal((2, 8000))).astype(np.float32)
  mask = np.ones((2, 8000), bool)
  mask[1, 6000:] = False
  hidden = np.asarray(nnx.jit(lambda m, w, k: m.backbone(w, k))(model, wave, mask))
  np.testing.assert_allclose(hidden[:, :, :4], ref, atol=1e-5, rtol=0)
  logits = nnx.jit(lambda m, w, k: m(w, k, depth=6))(model, wave, mask)
  assert logits.shape == (2, 2, 12)


def test_masked_group_norm_makes_features_independent_of_padding():
  """Utterances of different lengths: with mask_group_norm the group-norm (Base) conv stack gives
  a padded utterance's valid frames exactly the features of the utterance alone; without it the
  padding's zeros enter the statistics (transformers' behaviour, kept for keyword spotting)."""
  cfg = mconfig.small(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                         num_attention_heads=2, conv_dim=(16,) * 7)
  assert cfg.feat_extract_norm == "group"
  params = wav2vec2.init_params(cfg, jax.random.key(0))
  rs = np.random.RandomState(0)
  alone = rs.randn(1, 3200).astype(np.float32)
  padded = np.concatenate([alone, np.zeros((1, 4800), np.float32)], axis=1)
  mask = np.arange(8000)[None] < 3200
  f_alone, _ = wav2vec2.extract_features(cfg, params, alone)
  f_pad, fmask = wav2vec2.extract_features(cfg, params, padded, mask, mask_group_norm=True)
  t = int(np.sum(fmask))
  assert t == f_alone.shape[1] == 9
  np.testing.assert_allclose(np.asarray(f_pad)[:, :t], np.asarray(f_alone), atol=1e-5)
  f_hf, _ = wav2vec2.extract_features(cfg, params, padded, mask)  # statistics over the padding
  assert np.max(np.abs(np.asarray(f_hf)[:, :t] - np.asarray(f_alone))) > 1e-2


def test_ctc_early_exit_takes_the_frame_heads_taps():
  model = convert.load_early_exit("builtin:small_ssl_sentences", (3, 9), num_classes=29,
                                  head="frames", frame_kernel=9)
  assert model.heads.conv_kernel[...].shape == (2, 9, 128, 128)
  wave = (0.1 * np.random.default_rng(7).standard_normal((2, 8000))).astype(np.float32)
  mask = np.ones((2, 8000), bool)
  mask[1, 6000:] = False
  logits = nnx.jit(lambda m, w, k: m(w, k, depth=3))(model, wave, mask)
  assert logits.shape == (1, 2, model.backbone.config.num_frames(8000), 29)  # exit 3 only
