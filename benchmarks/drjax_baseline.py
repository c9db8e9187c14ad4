"""The same federated round written with DrJAX (`drjax` on PyPI), as a DrJAX user would write it.

DrJAX maps a function over a placed axis of clients (`drjax.map_fn`, vmapped and sharded over a
mesh axis named like the placement) and reduces over it (`drjax.reduce_sum`). Its map needs one
shape, so clients are grouped by depth: one `drjax.program` per depth group broadcasts the
global model sliced to that depth, trains every client of the group (the engine's own
`train_client`, so local training is identical), and returns the group's weighted sums; the
depth-aware mean (n_i * L_i over the clients that trained each layer) is then taken across the
groups. What differs from `fl.run_round` is the program structure: one compiled program per depth
group plus a combine step, the whole group vmapped at once, and every padded local step computed
(vmap turns the skip of an empty batch into a select).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fedexit_jax import federated as fl
from fedexit_jax.federated import aggregate, server, simulate, trees

PyTree = Any


def _require_drjax():
  try:
    import drjax  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("the DrJAX baseline needs `pip install drjax` (the test extra has it)") from e
  return drjax


@functools.lru_cache(maxsize=None)
def group_program(spec: fl.RoundSpec, depth: int, num_clients: int):
  """jit(drjax program): (sliced params, group data [k, ...], keys [k], round) -> (sum of w * delta,
  sum of w) over the k clients of one depth, w = n_i * depth (the paper's Eq. 1 weights)."""
  drjax = _require_drjax()
  # The engine's 1-D device mesh, whose axis is named like the placement, so DrJAX shards the
  # clients over the devices as it does on a pod (when the group divides evenly over them).
  mesh = simulate._mesh(spec)  # pylint: disable=protected-access
  mesh = mesh if num_clients % mesh.size == 0 else None

  @drjax.program(placements={"clients": num_clients})
  def group(params, data, keys, round_index):
    placed = drjax.broadcast(params, mesh=mesh)
    delta, metrics = drjax.map_fn(
        lambda p, d, k: fl.train_client(spec.client, depth, p, d, k, round_index),
        (placed, data, keys), mesh=mesh)
    w = drjax.map_fn(lambda n, ok: jnp.where(ok, n * depth, 0.0),
                     (metrics.num_examples, metrics.finite), mesh=mesh)
    weighted = drjax.map_fn(lambda x, wi: jax.tree.map(lambda a: a * wi, x), (delta, w),
                            mesh=mesh)
    return drjax.reduce_sum(weighted), drjax.reduce_sum(w)

  return jax.jit(group)


@functools.lru_cache(maxsize=None)
def _combine(spec: fl.RoundSpec, depths: tuple[int, ...]):
  model, deep = spec.client.model, spec.client.deepest_only

  def combine(state, sums, weights):
    num = jax.tree.map(jnp.zeros_like, state.params)
    den = trees.zero_denominator(model, state.params)
    for d, s, w in zip(depths, sums, weights):
      num = jax.tree.map(jnp.add, num, trees.pad_to_full(model, s, state.params, d, deep))
      den = jax.tree.map(lambda a, m: a + m * w, den,
                         trees.depth_mask(model, state.params, d, deepest_only=deep))
    acc = aggregate.Accumulator(num, den)
    mean = aggregate.finalize(acc, jax.tree.map(jnp.zeros_like, state.params))
    trained = jax.tree.map(lambda x: x > 0, den)
    return server.apply_update(state, spec.server_optimizer, mean, trained)

  return jax.jit(combine)


def run_round(state: fl.ServerState, cohort: fl.Cohort, spec: fl.RoundSpec) -> fl.ServerState:
  """One round of the `paper` weighting written with DrJAX; the same clients, keys and local
  training as fl.run_round."""
  if spec.weighting != "paper":
    raise ValueError("the DrJAX baseline implements the paper's n_i * L_i weighting only")
  rng, round_key = jax.random.split(state.rng)
  data = simulate.cohort_data(cohort)
  depths = np.asarray(cohort.depths)
  levels = tuple(sorted(set(depths.tolist())))
  sums, weights = [], []
  for d in levels:
    sel = np.flatnonzero(depths == d)
    group = fl.ClientData(*(jnp.asarray(np.asarray(a)[sel]) for a in data))
    keys = jax.vmap(lambda i: jax.random.fold_in(round_key, i))(
        jnp.asarray(np.asarray(cohort.client_ids)[sel]))
    s, w = group_program(spec, d, len(sel))(spec.client.slice_params(state.params, d), group,
                                            keys, state.round)
    sums.append(s)
    weights.append(w)
  return _combine(spec, levels)(state._replace(rng=rng), tuple(sums), tuple(weights))
