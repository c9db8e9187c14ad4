"""Distance to the hardware limit, measured in the same run on the same device: a large matmul's
FLOP/s (what the round's FLOP/s is compared to) and a plain device copy's bytes/s (what the masked
tree-mean's bytes/s is compared to)."""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import block, median_time
from fedexit_jax.federated import aggregate, trees


def matmul_flops(n: int, reps: int) -> dict[str, float]:
  """FLOP/s of one float32 [n, n] @ [n, n] (2 n^3 FLOPs)."""
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), jnp.float32)
  b = jax.random.normal(kb, (n, n), jnp.float32)
  f = jax.jit(jnp.matmul)
  t, _ = median_time(lambda: block(f(a, b)), reps)
  return {"n": n, "seconds": t, "flops_per_s": 2.0 * n ** 3 / t}


def _nbytes(tree: Any) -> int:
  return sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def tree_mean_bandwidth(params: Any, model, depths: Sequence[int],
                        reps: int) -> dict[str, float]:
  """Bytes/s of the jitted masked tree-mean over K = len(depths) stacked client trees (the depth
  masks and weights a real round uses) against a jitted copy of the same stacked bytes.

  Traffic counts bytes read plus bytes written on both sides: tree-mean reads the stack, masks,
  weights and the fallback tree and writes one tree; the copy reads and writes the stack."""
  k = len(depths)
  rng = np.random.default_rng(1)  # numpy: eager jax.random would compile a kernel per leaf shape
  stacked = jax.tree.map(
      lambda p: jnp.asarray(rng.standard_normal((k,) + p.shape, dtype=np.float32)), params)
  per_depth = {d: jax.jit(lambda t, d=d: trees.depth_mask(model, t, d))(params)
               for d in sorted({int(d) for d in depths})}
  masks = jax.tree.map(lambda *m: jnp.stack(m), *[per_depth[int(d)] for d in depths])
  weights = jnp.asarray(np.asarray(depths, np.float32))
  fallback = jax.tree.map(jnp.zeros_like, params)
  stacked, masks, weights, fallback = block((stacked, masks, weights, fallback))
  mean = jax.jit(aggregate.masked_tree_mean)
  copy = jax.jit(lambda t: jax.tree.map(jnp.copy, t))
  t_mean, _ = median_time(lambda: block(mean(stacked, masks, weights, fallback)), reps)
  t_copy, _ = median_time(lambda: block(copy(stacked)), reps)
  sb = _nbytes(stacked)
  mean_traffic = sb + _nbytes(masks) + _nbytes(weights) + 2 * _nbytes(fallback)  # + output
  copy_traffic = 2 * sb
  return {"clients": k, "stacked_bytes": sb, "tree_mean_seconds": t_mean,
          "copy_seconds": t_copy, "tree_mean_bytes_per_s": mean_traffic / t_mean,
          "copy_bytes_per_s": copy_traffic / t_copy,
          "ratio": (mean_traffic / t_mean) / (copy_traffic / t_copy)}
