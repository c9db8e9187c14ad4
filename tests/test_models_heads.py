"""Statistics pooling and early-exit logits, with hand-derived numbers."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedexit_jax.models import config as mconfig
from fedexit_jax.models import early_exit, heads, wav2vec2

EPS = heads.STD_EPS


def test_stats_pool_uses_valid_frames_only():
  # one exit, batch 2, 3 frames, 2 features; the padded frame (100s) must not count
  hidden = jnp.array([[[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]],
                       [[2.0, 4.0], [2.0, 8.0], [2.0, 6.0]]]])
  mask = jnp.array([[True, True, False], [True, True, True]])
  pooled = heads.stats_pool(hidden, mask)
  assert pooled.shape == (1, 2, 4)
  # row 0: mean (2, 0), var (1, 0); row 1: mean (2, 6), var (0, 8/3)
  expected = [[[2.0, 0.0, np.sqrt(1 + EPS), np.sqrt(EPS)],
               [2.0, 6.0, np.sqrt(EPS), np.sqrt(8 / 3 + EPS)]]]
  np.testing.assert_allclose(pooled, expected, rtol=1e-6)
  # no mask == all-valid mask
  np.testing.assert_allclose(heads.stats_pool(hidden), heads.stats_pool(hidden, jnp.ones((2, 3), bool)),
                             rtol=1e-6)


def test_stats_pool_gradient_is_finite_for_constant_input():
  grad = jax.grad(lambda h: heads.stats_pool(h, jnp.array([[True, True, False]])).sum())(
      jnp.ones((1, 3, 2)))
  chex.assert_tree_all_finite(grad)
  np.testing.assert_allclose(grad[0, 2], 0.0)  # the padded frame gets no gradient


def test_init_exit_heads_shapes():
  p = heads.init_exit_heads(jax.random.PRNGKey(0), hidden_size=8, num_classes=5, num_exits=4)
  assert p["kernel"].shape == (4, 16, 5) and p["bias"].shape == (4, 5)


@pytest.mark.parametrize("taps,want", [
    # x = (1, 2, 0): frame 2 is padding, zeroed first. Tap j reads frame t + j - taps // 2.
    ((1.0, 10.0, 100.0), (10 + 200, 1 + 20, 2)),  # odd: one frame of context each side
    ((1.0, 10.0, 100.0, 1000.0), (100 + 2000, 10 + 200, 1 + 20)),  # even: two before, one after
])
def test_frame_heads_convolve_valid_frames_with_the_configured_taps(taps, want):
  p = heads.init_heads(jax.random.key(0), "frames", hidden_size=1, num_outputs=1, num_exits=2,
                       frame_kernel=len(taps))
  assert p["conv_kernel"].shape == (2, len(taps), 1, 128)
  p = {"conv_kernel": jnp.array(taps).reshape(1, -1, 1, 1), "conv_bias": jnp.zeros((1, 1)),
       "out_kernel": jnp.ones((1, 1, 1)), "out_bias": jnp.zeros((1, 1))}
  hidden = jnp.array([1.0, 2.0, 3.0]).reshape(1, 1, 3, 1)
  logits = heads.apply_frame_heads(p, hidden, jnp.array([[True, True, False]]))
  np.testing.assert_allclose(logits[0, 0, :, 0], jax.nn.gelu(jnp.array(want, jnp.float32),
                                                             approximate=False), rtol=1e-6)


def _setup():
  cfg = mconfig.EncoderConfig(hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                              intermediate_size=32, conv_dim=(8, 8), conv_kernel=(10, 3),
                              conv_stride=(5, 2), num_conv_pos_embeddings=4,
                              num_conv_pos_embedding_groups=2)
  params = wav2vec2.init_params(cfg, jax.random.PRNGKey(0))
  hp = heads.init_exit_heads(jax.random.PRNGKey(1), 16, 3, 2)
  hp["bias"] = jnp.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]])
  wave = jax.random.normal(jax.random.PRNGKey(2), (2, 1600))
  mask = jnp.ones((2, 1600), bool).at[1, 900:].set(False)
  feats, frame_mask = wav2vec2.extract_features(cfg, params, wave, mask)
  return cfg, params, hp, feats, frame_mask


def test_exit_logits_match_manual_pooling_and_linear():
  cfg, params, hp, feats, frame_mask = _setup()
  logits = early_exit.exit_logits(cfg, params, hp, feats, frame_mask, exits=(2, 4), depth=4)
  assert logits.shape == (2, 2, 3)
  hidden = wav2vec2.encode_features(cfg, params, feats, frame_mask)
  for n, e in enumerate((2, 4)):
    pooled = heads.stats_pool(hidden[e - 1], frame_mask)
    np.testing.assert_allclose(logits[n], pooled @ hp["kernel"][n] + hp["bias"][n], rtol=1e-5, atol=1e-5)
  # depth 3 reaches only exit 2, and gives the same logits for it (heads may be pre-sliced)
  sliced = jax.tree.map(lambda x: x[:1], hp)
  shallow = early_exit.exit_logits(cfg, params, sliced, feats, frame_mask, exits=(2, 4), depth=3)
  assert shallow.shape == (1, 2, 3)
  np.testing.assert_allclose(shallow[0], logits[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("exits,depth,msg", [((2, 5), 4, "exits must be"), ((3, 2), 4, "exits must be"),
                                             ((2, 4), 5, "depth must be"), ((2, 4), 1, "below the first exit")])
def test_exit_logits_validation(exits, depth, msg):
  cfg, params, hp, feats, frame_mask = _setup()
  with pytest.raises(ValueError, match=msg):
    early_exit.exit_logits(cfg, params, hp, feats, frame_mask, exits=exits, depth=depth)


def test_changing_the_mask_does_not_recompile():
  cfg, params, hp, feats, frame_mask = _setup()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def f(params, hp, feats, frame_mask):
    return early_exit.exit_logits(cfg, params, hp, feats, frame_mask, exits=(2, 4), depth=4)

  a = f(params, hp, feats, frame_mask)
  b = f(params, hp, feats, frame_mask.at[0, 50:].set(False))
  assert not np.allclose(a[:, 0], b[:, 0])  # the mask is live data ...
  np.testing.assert_allclose(a[:, 1], b[:, 1], rtol=1e-5)  # ... and only row 0 changed


def test_frame_heads_gru_matches_torch_bidirectional_gru():
  torch = pytest.importorskip("torch")
  d, u, t = 5, 4, 6
  p = heads.init_heads(jax.random.key(0), "frames", hidden_size=3, num_outputs=2, num_exits=1,
                       frame_kernel=1, frame_rnn=u)
  assert p["gru_fwd_hh"].shape == (1, u, 3 * u) and p["out_kernel"].shape == (1, 2 * u, 2)
  gru = torch.nn.GRU(d, u, batch_first=True, bidirectional=True)
  torch.manual_seed(0)
  for w in gru.parameters():
    torch.nn.init.normal_(w, std=0.5)  # nonzero biases, b_hn included
  x = np.random.default_rng(0).normal(size=(2, t, d)).astype(np.float32)
  want = gru(torch.from_numpy(x))[0].detach().numpy()  # [B, T, 2U]: forward then backward
  got = []
  for direction, sfx in (("fwd", ""), ("bwd", "_reverse")):
    w = {k: getattr(gru, f"{k}_l0{sfx}").detach().numpy() for k in
         ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    q = {f"gru_{direction}_ih": w["weight_ih"].T[None], f"gru_{direction}_hh": w["weight_hh"].T[None],
         f"gru_{direction}_b": (w["bias_ih"] + np.r_[w["bias_hh"][:2 * u], np.zeros(u)])[None],
         f"gru_{direction}_bhn": w["bias_hh"][2 * u:][None]}
    got.append(heads.gru_frames(q, direction, jnp.asarray(x)[None], None)[0])
  np.testing.assert_allclose(np.concatenate(got, -1), want, rtol=1e-5, atol=1e-5)


def test_frame_heads_gru_never_reads_padding():
  p = heads.init_heads(jax.random.key(0), "frames", hidden_size=6, num_outputs=5, num_exits=2,
                       frame_kernel=3, frame_rnn=4)
  x = jax.random.normal(jax.random.key(1), (2, 2, 7, 6))
  mask = jnp.array([[True] * 7, [True] * 4 + [False] * 3])
  out = heads.apply_frame_heads(p, x, mask)
  alone = heads.apply_frame_heads(p, x[:, 1:, :4], None)  # row 1 cut to its 4 real frames
  np.testing.assert_allclose(out[:, 1, :4], alone[:, 0], rtol=1e-5, atol=1e-6)
  noisy = heads.apply_frame_heads(p, x.at[:, 1, 4:].set(1e3), mask)
  np.testing.assert_allclose(noisy[:, 1, :4], out[:, 1, :4], rtol=1e-5, atol=1e-6)
