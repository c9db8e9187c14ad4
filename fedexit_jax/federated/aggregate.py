"""The masked tree-mean: depth-aware partial aggregation (the paper's Eq. 1) and its ablations.

For every parameter element, the new global value is the weighted mean over the clients that
trained it,

    new = sum_k w_k m_k x_k / sum_k w_k m_k,   or `fallback` where that sum is zero,

so a layer that no sampled client trained keeps its previous value. Every weighting scheme
(paper, ReeFL, DepthFL, ...) is only a different `w`; the hetero-FedAvg baseline is only a
different `m` (all ones: shallow clients "send back" their untouched deep layers).

The mean is written as an accumulator (numerator, denominator) so that a round can stream over
chunks of clients and hold only one chunk of client models in memory at a time.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any

# weighting scheme -> (weight of client i, whether shallow clients count for every layer)
SCHEMES = ("paper", "samples", "uniform", "depth", "fedavg_naive", "homogeneous")


class Accumulator(NamedTuple):
  """Running sums of a masked weighted mean.

  numerator: like one client's tree: sum_k w_k m_k x_k.
  denominator: like one client's tree but each leaf shaped like its mask without the client axis
    (e.g. [L, 1, 1] for a stacked-layer leaf [L, d, d]): sum_k w_k m_k.
  """
  numerator: PyTree
  denominator: PyTree


def _safe(x: jax.Array, w: jax.Array) -> jax.Array:
  # A client with weight 0 (padding, excluded as non-finite) must not contribute NaN via 0 * NaN.
  return jnp.where(w != 0, x, jnp.zeros((), x.dtype))


# Clients summed in one elementwise pass (K reads, one write per element). On XLA:CPU this runs at
# ~10x the bytes/s of a tensordot over the client axis (which makes XLA transpose the stack) and
# ~30x a jnp.sum over axis 0 (benchmarks/limits.py measures it); larger stacks go block by block.
_UNROLL = 16


def client_sum(x: jax.Array, w: jax.Array) -> jax.Array:
  """sum_k w_k x_k over the leading axis, skipping (not multiplying) clients with w_k == 0."""
  def block_sum(xb, wb):
    total = None
    for k in range(xb.shape[0]):
      term = _safe(xb[k] * wb[k], wb[k])
      total = term if total is None else total + term
    return total

  k = x.shape[0]
  if k <= _UNROLL:
    return block_sum(x, w)
  pad = -k % _UNROLL
  w = jnp.broadcast_to(w, (k,) + w.shape[1:])
  x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
  w = jnp.pad(w, [(0, pad)] + [(0, 0)] * (w.ndim - 1))
  xs = x.reshape((-1, _UNROLL) + x.shape[1:])
  ws = w.reshape((-1, _UNROLL) + w.shape[1:])
  init = jnp.zeros(jnp.broadcast_shapes(x.shape[1:], w.shape[1:]), jnp.result_type(x, w))
  total, _ = jax.lax.scan(lambda acc, b: (acc + block_sum(*b), None), init, (xs, ws))
  return total


@jax.jit
def weighted_sums(stacked: PyTree, masks: PyTree, weights: jax.Array) -> Accumulator:
  """The (numerator, denominator) of one stack of clients; see `masked_tree_mean`."""
  weights = jnp.asarray(weights, jnp.float32)

  def client_weights(x, m):  # w_k m_k, shaped like the mask leaf
    return weights.reshape((-1,) + (1,) * (x.ndim - 1)) * jnp.asarray(m, jnp.float32)

  def num(x, m):
    return client_sum(x, client_weights(x, m))

  def den(x, m):
    w = client_weights(x, m)
    return jnp.sum(jnp.broadcast_to(w, (x.shape[0],) + w.shape[1:]), axis=0)

  return Accumulator(jax.tree.map(num, stacked, masks), jax.tree.map(den, stacked, masks))


def accumulate(acc: Accumulator, stacked: PyTree, masks: PyTree, weights: jax.Array) -> Accumulator:
  """Adds one chunk of clients to a running accumulator (streaming form of the mean)."""
  s = weighted_sums(stacked, masks, weights)
  return jax.tree.map(jnp.add, acc, s)


def finalize(acc: Accumulator, fallback: PyTree) -> PyTree:
  """num / den elementwise, or `fallback` wherever den is zero (safe division, no NaN)."""
  def leaf(n, d, f):
    ok = d > 0
    return jnp.where(ok, n / jnp.where(ok, d, 1.0), f).astype(n.dtype)
  return jax.tree.map(leaf, acc.numerator, acc.denominator, fallback)


@jax.jit
def masked_tree_mean(stacked: PyTree, masks: PyTree, weights: jax.Array, fallback: PyTree) -> PyTree:
  """Masked weighted mean over a leading client axis, leaf by leaf and element by element.

  Args:
    stacked: pytree, every leaf with a leading client axis K.
    masks: pytree of the same structure, each leaf broadcastable to its stacked leaf (e.g.
      [K, L, 1, 1] for a stacked-layer leaf [K, L, d, d]); 1 where the client trained it.
    weights: [K] non-negative client weights.
    fallback: pytree like one client's leaves, returned wherever the total weight is zero.

  Returns:
    sum_k w_k m_k x_k / sum_k w_k m_k elementwise, or `fallback` where that sum is 0. A client
    with w_k m_k = 0 never contributes, even if its values are NaN.
  """
  return finalize(weighted_sums(stacked, masks, weights), fallback)


def client_weights(scheme: str, num_examples: jax.Array, depths: jax.Array) -> jax.Array:
  """Per-client aggregation weight of a named scheme.

  paper: n_i * L_i (Eq. 1); samples: n_i (ReeFL); uniform: 1 (DepthFL); depth: L_i;
  fedavg_naive and homogeneous: n_i (plain FedAvg weights; `fedavg_naive` additionally counts
  shallow clients for every layer, see `counts_untrained`). A client without examples trained
  nothing and gets weight 0 under every scheme.
  """
  n = jnp.asarray(num_examples, jnp.float32)
  d = jnp.asarray(depths, jnp.float32)
  return jnp.where(n > 0, _scheme_weights(scheme, n, d), 0.0)


def _scheme_weights(scheme: str, n: jax.Array, d: jax.Array) -> jax.Array:
  if scheme == "paper":
    return n * d
  if scheme in ("samples", "fedavg_naive", "homogeneous"):
    return n
  if scheme == "uniform":
    return jnp.ones_like(n)
  if scheme == "depth":
    return d * jnp.ones_like(n)
  raise ValueError(f"unknown weighting scheme {scheme!r}; choose one of {SCHEMES}")


def scheme_vector(scheme: str) -> jax.Array:
  """A named scheme as data, [uses n_i, uses L_i, counts untrained rows] in {0, 1}: replicas
  of a round with different schemes share one compiled program (simulate.run_replicas)."""
  if scheme not in SCHEMES:
    raise ValueError(f"unknown weighting scheme {scheme!r}; choose one of {SCHEMES}")
  return jnp.array([scheme not in ("uniform", "depth"), scheme in ("paper", "depth"),
                    scheme == "fedavg_naive"], jnp.float32)


def client_weights_from_vector(vector: jax.Array, num_examples: jax.Array,
                               depths: jax.Array) -> jax.Array:
  """client_weights of the scheme `vector` (scheme_vector) stands for: n_i^a L_i^b, by selects,
  so the paper's n_i * L_i is the same float product as in client_weights."""
  n = jnp.asarray(num_examples, jnp.float32)
  d = jnp.asarray(depths, jnp.float32) * jnp.ones_like(n)
  w = jnp.where(vector[0] > 0, n, 1.0) * jnp.where(vector[1] > 0, d, 1.0)
  return jnp.where(n > 0, w, 0.0)


def counts_untrained(scheme: str) -> bool:
  """True for the hetero-FedAvg baseline: a shallow client's untouched deep layers (the server
  copy, i.e. a zero update) are averaged in as if trained, diluting the deep clients' updates."""
  if scheme not in SCHEMES:
    raise ValueError(f"unknown weighting scheme {scheme!r}; choose one of {SCHEMES}")
  return scheme == "fedavg_naive"
