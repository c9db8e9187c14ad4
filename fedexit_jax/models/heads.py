"""Exit heads as functions, stacked over exits so that one einsum serves every exit.

- "pooled" (the paper's classification head): statistics pooling over valid frames, then one
  linear layer. Module: modules.ExitHeads.
- "frames" (the paper's ASR head, "frame-level sequence module -> linear -> CTC"): a temporal
  convolution over the frames (model.frame_head_kernel taps, GELU) as the sequence module,
  then a linear layer to per-frame logits. A convolution rather than SUPERB's BiLSTM: per-exit
  and stacked it is one einsum per tap, where a recurrent scan over frames would dominate a CPU
  round.
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
               num_exits: int, frame_kernel: int = 3) -> dict:
  """The stacked heads of `kind` (HEAD_KINDS): num_outputs classes, or the CTC vocabulary
  (frame_kernel: the "frames" heads' temporal-conv taps)."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from fedexit_jax.models import modules  # pylint: disable=import-outside-toplevel (cycle)
  module = modules.init_fast(lambda rngs: modules.make_heads(
      kind, hidden_size, num_outputs, num_exits, frame_kernel=frame_kernel, rngs=rngs), rng)
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
  return (jnp.einsum("nbtd,ndv->nbtv", y, head_params["out_kernel"][:n])
          + head_params["out_bias"][:n, None, None, :])


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
