"""Shapes, masks and depth semantics of the encoder (numerical parity with transformers lives in
test_parity_transformers.py)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedexit_jax.models import config as mconfig
from fedexit_jax.models import encode, wav2vec2

TINY = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2),
            num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4)


def tiny(**kw):
  return mconfig.EncoderConfig(**{**TINY, **kw})


@pytest.mark.parametrize("stable", [False, True])
def test_encode_shapes(stable):
  cfg = tiny(do_stable_layer_norm=stable, feat_extract_norm="layer" if stable else "group",
             conv_bias=stable)
  params = wav2vec2.init_params(cfg, jax.random.PRNGKey(0))
  wave = jax.random.normal(jax.random.PRNGKey(1), (2, 4000))
  frames = cfg.num_frames(4000)  # (4000-10)//5+1 = 799 -> 399 -> 199
  assert frames == 199
  feats, mask = wav2vec2.extract_features(cfg, params, wave)
  assert feats.shape == (2, frames, 16) and mask.shape == (2, frames) and bool(mask.all())
  hidden = encode(cfg, params, wave)
  assert hidden.shape == (4, 2, frames, 32)
  assert encode(cfg, params, wave, depth=2).shape == (2, 2, frames, 32)
  chex.assert_tree_all_finite(hidden)


def test_layers_are_stacked_along_leading_axis():
  cfg = tiny()
  params = wav2vec2.init_params(cfg, jax.random.PRNGKey(0))
  for leaf in jax.tree.leaves(params["encoder"]["layers"]):
    assert leaf.shape[0] == 4


def test_shallow_depth_is_prefix_of_full_depth_and_accepts_sliced_params():
  cfg = tiny()
  params = wav2vec2.init_params(cfg, jax.random.PRNGKey(0))
  wave = jax.random.normal(jax.random.PRNGKey(1), (2, 4000))  # shapes as above: reuses compiles
  full = encode(cfg, params, wave)
  short = encode(cfg, params, wave, depth=2)
  np.testing.assert_allclose(short, full[:2], atol=1e-5)
  sliced = dict(params, encoder=dict(params["encoder"],
                                      layers=jax.tree.map(lambda w: w[:2], params["encoder"]["layers"])))
  np.testing.assert_allclose(encode(cfg, sliced, wave, depth=2), short, atol=1e-6)
  with pytest.raises(ValueError, match="depth 3 requested"):
    encode(cfg, sliced, wave, depth=3)


@pytest.mark.parametrize("depth", [0, 5, 2.0])
def test_bad_depth_raises(depth):
  cfg = tiny()
  params = wav2vec2.init_params(cfg, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="depth must be an int"):
    encode(cfg, params, jnp.zeros((1, 2000)), depth=depth)


def test_frame_mask_from_sample_mask():
  cfg = tiny()
  params = wav2vec2.init_params(cfg, jax.random.PRNGKey(0))
  mask = np.zeros((2, 4000), np.int32)
  mask[0, :] = 1
  mask[1, :2000] = 1  # (2000-10)//5+1 = 399 -> 199 -> 99 valid frames
  _, frame_mask = wav2vec2.extract_features(cfg, params, jnp.zeros((2, 4000)), mask)
  np.testing.assert_array_equal(frame_mask.sum(-1), [199, 99])
  assert bool(frame_mask[1, :99].all()) and not bool(frame_mask[1, 99:].any())


def test_padding_does_not_change_valid_frames_of_layer_norm_encoder():
  """With per-frame layer norms in the conv stack (no group norm over time), a padded copy of a
  clip must give the same hidden states on its valid frames as the unpadded clip."""
  cfg = tiny(do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True)
  params = wav2vec2.init_params(cfg, jax.random.PRNGKey(0))
  clip = jax.random.normal(jax.random.PRNGKey(2), (1, 2000))
  padded = jnp.concatenate([clip, jnp.zeros((1, 2000))], axis=1)
  mask = jnp.concatenate([jnp.ones((1, 2000)), jnp.zeros((1, 2000))], axis=1)
  ref = encode(cfg, params, clip)  # 99 frames
  out = encode(cfg, params, padded, mask)
  # the last valid frames' receptive field overlaps padding in the conv stack and the pos conv
  # sees zeros instead of nothing at the edge in both cases, so all 99 frames must agree
  np.testing.assert_allclose(out[:, :, :99], ref, atol=1e-4)


def test_vmapped_gradient_over_client_params_is_finite():
  """What the federated engine does: per-client params stacked on a leading axis, vmap + grad."""
  cfg = tiny()
  params = wav2vec2.init_params(cfg, jax.random.PRNGKey(0))
  feats, frame_mask = wav2vec2.extract_features(cfg, params, jax.random.normal(jax.random.PRNGKey(1), (2, 2000)),
                                                jnp.ones((2, 2000)).at[1, 1500:].set(0))
  body = {k: params[k] for k in ("feature_projection", "encoder")}
  clients = jax.tree.map(lambda x: jnp.stack([x, 1.01 * x]), body)

  def loss(p):
    h = wav2vec2.encode_features(cfg, p, feats, frame_mask, depth=2)
    return jnp.mean(jnp.square(h) * frame_mask[None, :, :, None])

  grads = jax.jit(jax.vmap(jax.grad(loss)))(clients)
  chex.assert_tree_all_finite(grads)
  g = grads["encoder"]["layers"]["attention"]["q_proj"]["kernel"]
  assert g.shape == (2, 4, 32, 32)
  np.testing.assert_array_equal(g[:, 2:], 0.0)  # layers beyond depth get exactly zero gradient
  assert float(jnp.abs(g[:, :2]).max()) > 0
