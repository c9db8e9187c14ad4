"""R independent simulations advanced by one compiled round: an ablation grid as one program.

Runs that share shapes (model, depth levels, cohort size, chunk) but differ in seed and/or
weighting scheme keep their own server state (params, optimizer state, RNG) and their own
cohorts; the scheme is data (aggregate.scheme_vector), so `paper`, `samples`, `uniform`, `depth`
and `fedavg_naive` replicas share the program. Each replica computes exactly what run_round
computes for it.

With several devices the replicas are spread over them (each device runs whole rounds of its
replicas); on each device `batch` sets how its replicas run: lax.map(batch_size=batch), i.e.
`batch` replicas vmapped together, the groups one after another. On CPU 1 (one after another:
batching per-client weights does not pay there, see simulate.default_chunk_size); on an
accelerator all at once, which is what fills it.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from fedexit_jax.federated import aggregate, server, simulate
from fedexit_jax.federated import model as model_lib
from fedexit_jax.federated.client import ClientData
from fedexit_jax.federated.simulate import AXIS, Cohort, RoundSpec

PyTree = Any


def default_batch(num_replicas: int, backend: str | None = None) -> int:
  return 1 if (backend or jax.default_backend()) == "cpu" else num_replicas


@jax.jit
def _stack(states):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def stack_states(states: Sequence[server.ServerState]) -> server.ServerState:
  """R server states -> one with a leading replica axis (one dispatch for the whole tree)."""
  return _stack(tuple(states))


@functools.partial(jax.jit, static_argnums=1)
def _take(states, i: int):
  return jax.tree.map(lambda x: x[i], states)


def unstack_state(states: server.ServerState, i: int) -> server.ServerState:
  """Replica i's state (one dispatch for the whole tree)."""
  return _take(states, int(i))


_STACKED: list = []  # [(the replicas' datasets, pad, sharding, their stack)]: the last one


def _stacked(datasets, pad: int, sharding):
  """The replicas' datasets stacked [R, M, ...] and placed once, reused while the same datasets
  come back (every round of a grid): a per-round stack would copy every client's data."""
  if _STACKED:
    old, old_pad, old_sharding, stack = _STACKED[0]
    if (len(old) == len(datasets) and all(a is b for a, b in zip(old, datasets))
        and (old_pad, old_sharding) == (pad, sharding)):
      return stack
  stack = ClientData(*(jax.device_put(jnp.stack(xs + xs[:1] * pad), sharding)
                       for xs in zip(*datasets)))
  _STACKED[:] = [(tuple(datasets), pad, sharding, stack)]  # holds them: ids cannot be reused
  return stack


@functools.lru_cache(maxsize=None)
def _program(spec: RoundSpec, batch: int, shared_dataset: bool, spread: bool):
  """The grid's round. spread: the replica axis is split over the mesh's devices (shard_map),
  each device running its replicas' rounds whole, one after another; else every replica's chunks
  are split over the devices as in run_round."""
  def local(states, chunks, bounds, slots, schemes, dataset):
    def one(xs):
      state, c, b, s, scheme = xs[:5]
      return simulate._round(spec, state, c, b, s, dataset if shared_dataset else xs[5], scheme,
                             constrain=not spread)
    xs = (states, chunks, bounds, slots, schemes) + (() if shared_dataset else (dataset,))
    return jax.lax.map(one, xs, batch_size=min(batch, jax.tree.leaves(schemes)[0].shape[0]))

  if not spread:
    return jax.jit(local)
  mesh = simulate._mesh(spec)
  split = P(AXIS)
  return jax.jit(jax.shard_map(local, mesh=mesh,
                               in_specs=(split,) * 5 + (P() if shared_dataset else split,),
                               out_specs=split, check_vma=False))  # no collectives inside


def run_replicas(states: server.ServerState, cohorts: Sequence[Cohort], spec: RoundSpec,
                 weightings: Sequence[str], batch: int | None = None):
  """One round of R simulations. states: a ServerState with a leading replica axis
  (stack_states); cohorts[r] and weightings[r]: replica r's sampled clients and scheme
  (spec.weighting is not used). Cohorts of one ResidentDataset share it; cohorts of different
  ones (other seeds' partitions) need datasets of equal shapes. Returns (states, metrics) with
  the replica axis leading, metrics as run_round's; "depth" and "client_id" [R, K] host arrays.

  With several devices and R > 1 the replicas are spread over the devices (padded with copies of
  replica 0 to a multiple of the device count, whose results are dropped): replicas need no
  communication, where splitting one replica's chunks over the devices (run_round) does. One
  process only."""
  r = len(cohorts)
  if len(weightings) != r or jax.tree.leaves(states)[0].shape[0] != r:
    raise ValueError(f"{r} cohorts, {len(weightings)} weightings and states for "
                     f"{jax.tree.leaves(states)[0].shape[0]} replicas: give one of each per replica")
  model_lib.check_layout(spec.client.model, jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), states.params))
  sizes = {len(c.depths) for c in cohorts}
  if len(sizes) > 1:
    raise ValueError(f"replicas share one program: every cohort needs the same size, got {sizes}")
  if r == 1:  # no grid: the one-simulation program itself
    one, m = simulate.run_round(unstack_state(states, 0), cohorts[0],
                                dataclasses.replace(spec, weighting=weightings[0]))
    out = _stack(({k: v for k, v in m.items() if k not in ("depth", "client_id")},))
    return stack_states([one]), dict(out, depth=m["depth"][None], client_id=m["client_id"][None])
  mesh = simulate._mesh(spec)
  spread = mesh.size > 1
  layouts = [simulate.host_layout(c, spec, w, one_device=spread)
             for c, w in zip(cohorts, weightings)]
  datasets = [lay[3] for lay in layouts]
  shared = all(d is datasets[0] for d in datasets)
  pad = -r % mesh.size if spread else 0
  if not shared:
    shapes = {tuple(a.shape for a in d) for d in datasets}
    if len(shapes) > 1:
      raise ValueError("replicas with different client datasets need datasets of one shape "
                       f"(pad them to the same clients and examples), got {sorted(shapes)}")
    dataset = _stacked(datasets, pad, NamedSharding(mesh, P(AXIS) if spread else P()))
  else:
    dataset = datasets[0]
  layouts += layouts[:1] * pad
  schemes = jnp.stack([aggregate.scheme_vector(w) for w in list(weightings) + [weightings[0]] * pad])
  if pad:
    states = jax.tree.map(lambda x: jnp.concatenate([x] + [x[:1]] * pad), states)
  stack = lambda *xs: np.stack(xs)
  chunks = jax.tree.map(stack, *[lay[0] for lay in layouts])
  bounds = np.stack([lay[1] for lay in layouts])
  slots = np.stack([lay[2] for lay in layouts])
  if spread:
    split = NamedSharding(mesh, P(AXIS))
    chunks, bounds, slots, schemes, states = simulate._to_device(
        (chunks, bounds, slots, schemes, states), split)
  else:
    chunks = simulate._to_device(chunks, NamedSharding(mesh, P(None, None, AXIS)))
    bounds, slots = simulate._to_device((bounds, slots), NamedSharding(mesh, P()))
    states = simulate._replicate(states, mesh)
  batch = default_batch(r) if batch is None else batch
  states, metrics = _program(spec, int(batch), shared, spread)(states, chunks, bounds, slots,
                                                               schemes, dataset)
  if pad:
    states, metrics = jax.tree.map(lambda x: x[:r], (states, metrics))
  metrics["depth"] = np.stack([np.asarray(c.depths) for c in cohorts])
  metrics["client_id"] = np.stack([np.asarray(c.client_ids) for c in cohorts])
  return states, metrics
