"""Exit heads as functions: statistics pooling over valid frames, then one linear layer (the
paper's classification head), stacked over exits so that one einsum serves every exit. The module
is modules.ExitHeads."""
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
