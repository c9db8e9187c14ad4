"""R independent simulations advanced by one compiled round: an ablation grid as one program.

Runs that share shapes (model, depth levels, cohort size, chunk) but differ in seed and/or
weighting scheme keep their own server state (params, optimizer state, RNG) and their own
cohorts; the scheme is data (aggregate.scheme_vector), so `paper`, `samples`, `uniform`, `depth`
and `fedavg_naive` replicas share the program. Each replica computes exactly what run_round
computes for it.

`batch` sets how the replicas run inside the program: lax.map(batch_size=batch), i.e. `batch`
replicas vmapped together, the groups one after another. On CPU 1 (one replica after another:
batching per-client weights does not pay there, see simulate.default_chunk_size) and the saving
is R - 1 dispatches and host layouts of a round; on an accelerator all R at once, which is what
fills it.
"""
from __future__ import annotations

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


def stack_states(states: Sequence[server.ServerState]) -> server.ServerState:
  """R server states -> one with a leading replica axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def unstack_state(states: server.ServerState, i: int) -> server.ServerState:
  return jax.tree.map(lambda x: x[i], states)


@functools.lru_cache(maxsize=None)
def _program(spec: RoundSpec, batch: int, shared_dataset: bool):
  def program(states, chunks, bounds, slots, schemes, dataset):
    def one(xs):
      state, c, b, s, scheme = xs[:5]
      return simulate._round(spec, state, c, b, s, dataset if shared_dataset else xs[5], scheme)

    xs = (states, chunks, bounds, slots, schemes) + (() if shared_dataset else (dataset,))
    return jax.lax.map(one, xs, batch_size=batch)
  return jax.jit(program)


def run_replicas(states: server.ServerState, cohorts: Sequence[Cohort], spec: RoundSpec,
                 weightings: Sequence[str], batch: int | None = None):
  """One round of R simulations. states: a ServerState with a leading replica axis
  (stack_states); cohorts[r] and weightings[r]: replica r's sampled clients and scheme
  (spec.weighting is not used). Cohorts of one ResidentDataset share it; cohorts of different
  ones (other seeds' partitions) need datasets of equal shapes. Returns (states, metrics) with
  the replica axis leading, metrics as run_round's; "depth" and "client_id" [R, K] host arrays."""
  r = len(cohorts)
  if len(weightings) != r or jax.tree.leaves(states)[0].shape[0] != r:
    raise ValueError(f"{r} cohorts, {len(weightings)} weightings and states for "
                     f"{jax.tree.leaves(states)[0].shape[0]} replicas: give one of each per replica")
  model_lib.check_layout(spec.client.model, unstack_state(states, 0).params)
  sizes = {len(c.depths) for c in cohorts}
  if len(sizes) > 1:
    raise ValueError(f"replicas share one program: every cohort needs the same size, got {sizes}")
  layouts = [simulate.host_layout(c, spec, w) for c, w in zip(cohorts, weightings)]
  datasets = [lay[3] for lay in layouts]
  shared = all(d is datasets[0] for d in datasets)
  if not shared:
    shapes = {tuple(a.shape for a in d) for d in datasets}
    if len(shapes) > 1:
      raise ValueError("replicas with different client datasets need datasets of one shape "
                       f"(pad them to the same clients and examples), got {sorted(shapes)}")
    dataset = ClientData(*(jnp.stack(xs) for xs in zip(*datasets)))
  else:
    dataset = datasets[0]
  mesh = simulate._mesh(spec)
  stack = lambda *xs: np.stack(xs)
  chunks = jax.tree.map(stack, *[lay[0] for lay in layouts])
  chunks = simulate._to_device(chunks, NamedSharding(mesh, P(None, None, AXIS)))
  bounds, slots = simulate._to_device(
      (np.stack([lay[1] for lay in layouts]), np.stack([lay[2] for lay in layouts])),
      NamedSharding(mesh, P()))
  schemes = jnp.stack([aggregate.scheme_vector(w) for w in weightings])
  batch = default_batch(r) if batch is None else batch
  states = simulate._replicate(states, mesh)
  states, metrics = _program(spec, int(batch), shared)(states, chunks, bounds, slots, schemes,
                                                       dataset)
  metrics["depth"] = np.stack([np.asarray(c.depths) for c in cohorts])
  metrics["client_id"] = np.stack([np.asarray(c.client_ids) for c in cohorts])
  return states, metrics
