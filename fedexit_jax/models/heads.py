"""Exit heads as functions, stacked over exits so that one einsum serves every exit.

- "pooled" (the paper's classification head): statistics pooling over valid frames, then one
  linear layer. Module: modules.ExitHeads.
- "frames" (the paper's ASR head, "frame-level sequence module -> linear -> CTC"): a temporal
  convolution over the frames (model.frame_head_kernel taps, GELU) as the sequence module,
  optionally followed by a bidirectional GRU over the whole utterance (model.frame_head_rnn
  units per direction; SUPERB's ASR head is a BiLSTM), then a linear layer to per-frame
  logits. The GRU's scan runs one small matmul per frame, stacked over exits.
  Module: modules.FrameExitHeads.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

STD_EPS = 1e-5  # inside the sqrt: keeps d std / d x finite when a clip is constant (var == 0)


def init_exit_heads(rng: jax.Array, hidden_size: int, num_classes: int, num_exits: int) -> dict:
  """{"kernel": [E, 2H, C], "bias": [E, C]}: row e is the head of the e-th exit (the state of
  modules.ExitHeads: LeCun-normal kernels, so initial logits are O(1) whatever the width)."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from fedexit_jax.models import modules  # pylint: disable=import-outside-toplevel (cycle)
  module = modules.init_fast(
      lambda rngs: modules.ExitHeads(hidden_size, num_classes, num_exits, rngs=rngs), rng)
  return nnx.to_pure_dict(nnx.state(module))


HEAD_KINDS = ("pooled", "frames")


def init_heads(rng: jax.Array, kind: str, hidden_size: int, num_outputs: int,
               num_exits: int, frame_kernel: int = 3, frame_rnn: int = 0) -> dict:
  """The stacked heads of `kind` (HEAD_KINDS): num_outputs classes, or the CTC vocabulary
  (frame_kernel: the "frames" heads' temporal-conv taps; frame_rnn: their bidirectional GRU's
  units per direction, 0 for none)."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from fedexit_jax.models import modules  # pylint: disable=import-outside-toplevel (cycle)
  module = modules.init_fast(lambda rngs: modules.make_heads(
      kind, hidden_size, num_outputs, num_exits, frame_kernel=frame_kernel, frame_rnn=frame_rnn,
      rngs=rngs), rng)
  return nnx.to_pure_dict(nnx.state(module))


def apply_heads(kind: str, head_params: dict, hidden: jax.Array,
                frame_mask: jax.Array | None) -> jax.Array:
  """hidden [n, B, T, H] of n exits -> pooled logits [n, B, C] or frame logits [n, B, T, V]."""
  if kind == "pooled":
    return apply_exit_heads(head_params, stats_pool(hidden, frame_mask))
  return apply_frame_heads(head_params, hidden, frame_mask)


def apply_frame_heads(head_params: dict, hidden: jax.Array,
                      frame_mask: jax.Array | None) -> jax.Array:
  """hidden [n, B, T, H] -> frame logits [n, B, T, V] with the first n heads: a 'same' temporal
  convolution (padded frames zeroed first, so padding never leaks into real frames), GELU, then a
  linear layer."""
  n, _, t, _ = hidden.shape
  kernel = head_params["conv_kernel"][:n]  # [n, K, H, D]
  k = kernel.shape[1]
  if frame_mask is not None:
    hidden = hidden * frame_mask.astype(hidden.dtype)[..., None]
  left = k // 2
  x = jnp.pad(hidden, ((0, 0), (0, 0), (left, k - 1 - left), (0, 0)))
  y = head_params["conv_bias"][:n, None, None, :]
  for j in range(k):
    y = y + jnp.einsum("nbth,nhd->nbtd", x[:, :, j:j + t], kernel[:, j])
  y = jax.nn.gelu(y, approximate=False)
  if "gru_fwd_ih" in head_params:  # a bidirectional GRU over the frames (model.frame_head_rnn)
    y = jnp.concatenate([gru_frames(head_params, "fwd", y, frame_mask),
                         gru_frames(head_params, "bwd", y, frame_mask)], axis=-1)
  return (jnp.einsum("nbtd,ndv->nbtv", y, head_params["out_kernel"][:n])
          + head_params["out_bias"][:n, None, None, :])


def gru_frames(head_params: dict, direction: str, x: jax.Array,
               frame_mask: jax.Array | None) -> jax.Array:
  """x [n, B, T, D] -> [n, B, T, U]: one direction ("fwd" or "bwd") of the heads' GRU, stacked
  over exits, with torch.nn.GRU's equations (flax.nnx.GRUCell's plus the bias b_hn inside the
  reset gate's product). The state is zeroed on padded frames, so the backward pass starts at
  each row's last real frame and padding never reaches a real frame's output."""
  n = x.shape[0]
  w_ih = head_params[f"gru_{direction}_ih"][:n]  # [n, D, 3U]
  w_hh = head_params[f"gru_{direction}_hh"][:n]  # [n, U, 3U]
  b_ih = head_params[f"gru_{direction}_b"][:n]  # [n, 3U]
  b_hn = head_params[f"gru_{direction}_bhn"][:n]  # [n, U]
  _, b, t, _ = x.shape
  units = w_hh.shape[1]
  xi = jnp.einsum("nbtd,ndg->tnbg", x, w_ih) + b_ih[None, :, None, :]  # time-major
  m = (jnp.ones((t, b), x.dtype) if frame_mask is None
       else jnp.swapaxes(frame_mask, 0, 1).astype(x.dtype))  # [T, B]

  def cell(h, inputs):
    xg, mt = inputs
    hg = jnp.einsum("nbu,nug->nbg", h, w_hh)
    xr, xz, xn = jnp.split(xg, 3, axis=-1)
    hr, hz, hn = jnp.split(hg, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    cand = jnp.tanh(xn + r * (hn + b_hn[:, None, :]))
    h = ((1.0 - z) * cand + z * h) * mt[None, :, None]
    return h, h

  h0 = jnp.zeros((n, b, units), x.dtype)
  _, ys = jax.lax.scan(cell, h0, (xi, m), reverse=direction == "bwd")
  return jnp.transpose(ys, (1, 2, 0, 3))  # [n, B, T, U]


def stats_pool(hidden: jax.Array, frame_mask: jax.Array | None = None, eps: float = STD_EPS) -> jax.Array:
  """[..., B, T, H] -> [..., B, 2H]: mean and (population) std over the valid frames, concatenated.

  frame_mask [B, T] (True = valid) broadcasts over the leading exit axis; None means all valid.
  Padded frames carry garbage hidden states, so they are excluded with a multiplicative mask
  (data, not structure: a different mask never recompiles). std = sqrt(var + eps).
  """
  if frame_mask is None:
    mean = jnp.mean(hidden, axis=-2)
    var = jnp.mean(jnp.square(hidden - mean[..., None, :]), axis=-2)
  else:
    m = frame_mask.astype(hidden.dtype)[..., None]  # [B, T, 1]
    count = jnp.maximum(jnp.sum(m, axis=-2), 1.0)  # [B, 1]; an all-padding row pools to zeros
    mean = jnp.sum(hidden * m, axis=-2) / count
    var = jnp.sum(jnp.square(hidden - mean[..., None, :]) * m, axis=-2) / count
  return jnp.concatenate([mean, jnp.sqrt(var + eps)], axis=-1)


def apply_exit_heads(head_params: dict, pooled: jax.Array) -> jax.Array:
  """pooled [n, B, 2H] -> logits [n, B, C] using the first n heads."""
  n = pooled.shape[0]
  kernel, bias = head_params["kernel"][:n], head_params["bias"][:n]
  return jnp.einsum("nbd,ndc->nbc", pooled, kernel) + bias[:, None, :]
