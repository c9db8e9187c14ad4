"""One federated round: depth buckets, chunks of vmapped clients, sharding, streaming aggregation.

How a round runs (run_round):
  1. On the host, the sampled clients are sorted into depth buckets (depth is static: it sets the
     shapes), each bucket padded to a multiple of the chunk size, and laid out as
     [num_chunks, chunk, ...]. The number of chunks is fixed by the cohort size, so which clients
     and which depths are sampled is data: for a fixed cohort size it never recompiles.
  2. One compiled program loops (lax.fori_loop with traced bounds) over each bucket's chunks. A
     chunk's clients are trained together (client.train_chunk: a lax.scan over local steps of a
     vmapped client step; steps where no client of the chunk has data are skipped) and their
     deltas are added into full-shaped (numerator, denominator) accumulators: a depth-d chunk
     touches only rows [:d] of the stacked layers and the heads its loss trains (the exit at d
     for the paper's deepest-exit loss, every exit <= d for the summed losses).
     Memory is therefore one chunk of client models, whatever the cohort size.
  3. The masked mean (aggregate.finalize) becomes a pseudo-gradient for the server optimizer.
The chunk axis is sharded over the devices of a 1-D mesh ("clients"): the same code runs on one
CPU, 8 simulated CPU devices, one GPU or a multi-device host.

chunk_size is a knob: 1 = clients one after another inside the compiled program; K = all clients
of a bucket at once. Measured on the 2-core CPU (see default_chunk_size) sequential wins there;
on an accelerator larger chunks should win.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fedexit_jax.federated import aggregate, server, trees
from fedexit_jax.federated import model as model_lib
from fedexit_jax.federated.client import ClientData, ClientSpec, train_chunk, train_client

PyTree = Any
AXIS = "clients"


@dataclasses.dataclass(frozen=True)
class RoundSpec:
  """Static description of a round (hashable; build once, reuse every round so nothing recompiles).

  client: local training (client.ClientSpec).
  server_optimizer: an optax transformation on the pseudo-gradient (server.server_optimizer).
  weighting: aggregation scheme, one of aggregate.SCHEMES.
  depth_levels: every depth a cohort may contain (each gets its compiled bucket); default: exits.
  chunk_size: clients trained together per step of the bucket loop (rounded up to a multiple of
    the number of devices); None = default_chunk_size() for the model's width.
  mesh: 1-D mesh whose axis "clients" shards the chunk axis; None = all devices.
  """
  client: ClientSpec
  server_optimizer: optax.GradientTransformation = server.server_optimizer("fedavg")
  weighting: str = "paper"
  depth_levels: tuple[int, ...] | None = None
  chunk_size: int | None = None
  mesh: Mesh | None = None

  def __post_init__(self):
    aggregate.counts_untrained(self.weighting)  # validates the name
    levels = self.client.exits if self.depth_levels is None else self.depth_levels
    levels = tuple(sorted({int(d) for d in levels}))
    for d in levels:
      trees.validate_depth(self.client.exits, d, self.client.model.num_layers)
    object.__setattr__(self, "depth_levels", levels)
    if self.chunk_size is not None and self.chunk_size < 1:
      raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")


class ResidentDataset(NamedTuple):
  """Every client's data placed on the device(s) once (place_dataset): a round gathers its
  sampled clients inside the compiled program, so no client data crosses from the host per round.
  """
  data: ClientData          # device arrays [M, N, ...], replicated over the mesh
  num_examples: np.ndarray  # [M] host copy of the real examples per client (for the layout)


class Cohort(NamedTuple):
  """The clients sampled for one round.

  data: their arrays, leaves with a leading client axis K (inputs [K, N, ...], input_mask,
    labels [K, N], example_mask [K, N]); or the ResidentDataset they are taken from, by id."""
  data: ClientData | ResidentDataset
  client_ids: np.ndarray  # [K] ints: seeds each client's local shuffle (fold_in of the round key);
                          # with a ResidentDataset also the clients' rows in it
  depths: np.ndarray      # [K] ints, host-side: decides the client's bucket


def place_dataset(dataset: ClientData, spec: RoundSpec, shard: bool | None = None
                  ) -> ResidentDataset:
  """Copies a dataset stacked over all M clients ([M, N, ...] leaves) to the devices of the
  round's mesh once.

  shard=False: replicated, each device gathers its own clients without communication (the whole
  dataset must fit one device). True: split over the mesh's client axis (M padded to a multiple
  of the devices), for datasets larger than one device; XLA then moves each chunk's clients to
  the devices that train them. None (default): shard only when the dataset takes more than half
  of one device's memory (accelerators report it; CPU devices do not, and replicate)."""
  mesh = _mesh(spec)
  arrays = ClientData(*(np.asarray(a) for a in dataset))
  m = len(arrays.labels)
  num_examples = arrays.example_mask.reshape(m, -1).sum(1).astype(np.int64)
  if shard is None:
    stats = jax.local_devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    shard = limit is not None and sum(a.nbytes for a in arrays) > limit // 2
  if shard:
    pad = -m % mesh.size  # padding clients: no examples, never sampled (ids < M)
    arrays = ClientData(*(np.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)) for a in arrays))
  data = _to_device(arrays, NamedSharding(mesh, P(AXIS) if shard else P()))
  return ResidentDataset(data, num_examples)


def cohort_from_dataset(dataset: ClientData | ResidentDataset, client_ids: Sequence[int],
                        depths: Sequence[int]) -> Cohort:
  """The sampled clients of a dataset stacked over all M clients ([M, N, ...] leaves), or of a
  ResidentDataset (then nothing is copied: the round gathers them on the device). `depths` are
  the depths of ALL M clients (tiers.client_depths)."""
  ids = np.asarray(client_ids, np.int64)
  depths = np.asarray(depths)[ids].astype(np.int32)
  if isinstance(dataset, ResidentDataset):
    return Cohort(dataset, ids.astype(np.int32), depths)
  return Cohort(ClientData(*(np.asarray(a)[ids] for a in dataset)), ids.astype(np.int32), depths)


def cohort_data(cohort: Cohort) -> ClientData:
  """The cohort's client arrays [K, N, ...] (gathered from a ResidentDataset if need be)."""
  if isinstance(cohort.data, ResidentDataset):
    ids = jnp.asarray(cohort.client_ids)
    return ClientData(*(a[ids] for a in cohort.data.data))
  return cohort.data


def _to_device(tree, sharding):
  """The one place a round copies host arrays to the devices (tests count its bytes). In a
  multi-process run each process places only the shards of its own devices (every process holds
  the same host arrays)."""
  if sharding.is_fully_addressable:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda a: _global_array(a, sharding), tree)


def _global_array(a, sharding):
  """A global array over non-addressable devices from this process's full host copy."""
  if jnp.issubdtype(getattr(a, "dtype", None), jax.dtypes.prng_key):
    return jax.random.wrap_key_data(_global_array(jax.random.key_data(a), sharding),
                                    impl=jax.random.key_impl(a))
  if isinstance(a, jax.Array) and a.sharding == sharding:
    return a
  a = np.asarray(a)
  return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])


def _replicate(tree, mesh: Mesh):
  """The server state replicated over the mesh (a no-op after the first round)."""
  sharding = NamedSharding(mesh, P())
  if sharding.is_fully_addressable:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda a: _global_array(a, sharding), tree)


# Hidden width from which two clients per CPU device train together (default_chunk_size).
WIDE_CPU_CHUNK_FROM = 256


def default_chunk_size(backend: str | None = None, width: int | None = None) -> int:
  """Clients per chunk and device.

  CPU: 1, and 2 for models 256 or more wide (`width`: the model's hidden size, None if unknown).
  Measured on the project's 2-core CPU (4 layers, 16 clients x 4 examples, one local step,
  same-run steady-state times, load ~8 from other jobs): 128 wide: chunk 1 0.39 s, chunk 4
  0.58 s, chunk 16 (all) 1.12 s, per-client loop of the jitted client (run_round_reference)
  0.96 s; 256 wide, 32 clients: chunk 1 3.27 s, chunk 4 5.50 s, chunk 32 4.62 s, loop 6.78 s.
  Batching many clients' weights does not pay on CPU; running clients one after another inside
  one compiled program does. But two at a time per device beat one from 256 wide in every pass
  not disturbed by another benchmark, in three sittings of benchmarks/cpu_options.py (--quick
  round, 2026-12-01, 2-core AMD EPYC): 0.81-0.89x of the round at 256 wide, 0.92x at 384, and
  tied (1.02x) at 128. Uneven data
  (16 clients, one with 32 examples and 15 with 4, padded to 32, one epoch, batch 4, 128 wide):
  chunk 1 1.09 s, chunk 4 1.68 s, where computing the padded steps instead of skipping them
  took 4.9 s (chunk 1) and 5.1 s (chunk 4).
  Accelerators: 16 (not measured here: no GPU was available; batching is what fills a GPU).
  """
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return 16
  return 2 if width is not None and width >= WIDE_CPU_CHUNK_FROM else 1


def _mesh(spec: RoundSpec) -> Mesh:
  return spec.mesh if spec.mesh is not None else Mesh(np.array(jax.devices()), (AXIS,))


def effective_chunk_size(spec: RoundSpec, cohort_size: int, one_device: bool = False) -> int:
  """The chunk actually used: a multiple of the device count, and no larger than the cohort
  (rounded up to the devices) so that a large chunk does not train padding clients. one_device:
  for a round that runs on one device (a replica of replicas.run_replicas)."""
  n_dev = 1 if one_device else _mesh(spec).size
  c = (spec.chunk_size if spec.chunk_size is not None
       else default_chunk_size(width=spec.client.model.width) * n_dev)
  return math.ceil(min(c, cohort_size) / n_dev) * n_dev


class Layout(NamedTuple):
  order: np.ndarray    # [num_chunks * chunk] cohort index per slot, -1 = padding
  bounds: np.ndarray   # [num_levels, 2] chunk range [start, end) of each depth bucket
  slots: np.ndarray    # [K] slot of each cohort client


def layout(depths: np.ndarray, levels: Sequence[int], chunk: int,
           sizes: np.ndarray | None = None) -> Layout:
  """Buckets by depth, each padded to whole chunks, clients sorted by local data size (largest
  first) within a bucket. The number of chunks depends only on K, the chunk size and the number
  of levels, so the compiled shapes never change."""
  depths = np.asarray(depths)
  unknown = sorted(set(depths.tolist()) - set(levels))
  if unknown:
    raise ValueError(f"cohort has client depths {unknown} outside RoundSpec.depth_levels "
                     f"{tuple(levels)}")
  k = len(depths)
  num_chunks = math.ceil(k / chunk) + len(levels) - 1
  order = np.full(num_chunks * chunk, -1, np.int64)
  bounds = np.zeros((len(levels), 2), np.int32)
  start = 0
  for li, d in enumerate(levels):
    members = np.flatnonzero(depths == d)
    if sizes is not None:  # similar sizes share a chunk, so padded local steps can be skipped
      members = members[np.argsort(-np.asarray(sizes)[members], kind="stable")]
    n = math.ceil(len(members) / chunk)
    order[start * chunk:start * chunk + len(members)] = members
    bounds[li] = (start, start + n)
    start += n
  slots = np.empty(k, np.int64)
  slots[order[order >= 0]] = np.flatnonzero(order >= 0)
  return Layout(order, bounds, slots.astype(np.int32))


def _accumulate_depth(model, acc: aggregate.Accumulator, delta: PyTree, w: jax.Array,
                      depth: int, naive: bool | jax.Array,
                      deepest_only: bool = False, groups: int = 1) -> aggregate.Accumulator:
  """Adds a chunk of depth-`depth` clients (deltas sliced as ClientSpec.slice_params does, leading
  chunk axis) into the full-shaped accumulator: rows [:depth] of layers and the `trees.exit_rows`
  of heads. With `naive` (the hetero-FedAvg baseline; a bool, or a traced 0/1 when the scheme is
  data) the rows the clients did not train count with a zero delta.

  groups > 1: the accumulator's leaves carry a leading axis of `groups` partial sums, one per
  device, and the chunk's clients split into `groups` contiguous blocks (the blocks the mesh
  gives each device), so each device adds its own clients and nothing crosses devices until
  `_finish` sums the partials once per round. (Summing each chunk into one replicated
  accumulator was an all-reduce per chunk: 12% of a 256-wide round's op time on 2 CPU devices,
  benchmarks/README.md "Where the time goes".)"""
  def split(x):  # [chunk, ...] -> [groups, chunk / groups, ...] (groups == 1: unchanged)
    return x if groups == 1 else x.reshape((groups, -1) + x.shape[1:])

  def weighted_sum(x, v):
    return aggregate.client_sum(x, v.reshape((-1,) + (1,) * (x.ndim - 1)))

  def at_rows(a, rows):  # the trained rows of every partial sum
    return a.at[rows[0]:rows[1]] if groups == 1 else a.at[:, rows[0]:rows[1]]

  sums = weighted_sum if groups == 1 else jax.vmap(weighted_sum)
  wg = split(w)
  wsum = jnp.sum(wg, axis=-1)  # a scalar, or one per partial sum

  def num(path, a, x):
    s = sums(split(x), wg)
    rows = trees.row_range(model, path, depth, deepest_only)
    return a + s if rows is None else at_rows(a, rows).add(s)

  def den(path, a):
    ws = wsum if groups == 1 else wsum.reshape((groups,) + (1,) * (a.ndim - 1))
    rows = trees.row_range(model, path, depth, deepest_only)
    if rows is None or naive is True:
      return a + ws
    trained_only = at_rows(a, rows).add(ws)
    return trained_only if naive is False else jnp.where(naive > 0, a + ws, trained_only)

  return aggregate.Accumulator(
      jax.tree_util.tree_map_with_path(num, acc.numerator, delta),
      jax.tree_util.tree_map_with_path(den, acc.denominator))


_METRICS = ("loss", "finite", "weight", "num_examples", "num_steps")


def _chunk_step(spec: RoundSpec, depth: int, params: PyTree, round_index: jax.Array,
                round_key: jax.Array, chunks, dataset: ClientData | None,
                scheme: jax.Array | None, constrain: bool, j, carry):
  """Trains chunk j (all clients of depth `depth`) and adds it to the accumulator. With a
  resident `dataset`, chunks hold the clients' rows in it and the chunk is gathered here. The
  weighting is spec.weighting, or the aggregate.scheme_vector `scheme` (replicas);
  `round_index` (the server's round) feeds the client's learning-rate schedule."""
  acc, bufs = carry
  data, ids, valid = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, j, 0, False), chunks)
  if dataset is not None:
    rows = data
    data = ClientData(*(a[rows] for a in dataset))
    data = data._replace(example_mask=data.example_mask & valid[:, None])
  if constrain:  # the chunk's clients over the mesh (not inside a per-device shard_map)
    shard = NamedSharding(_mesh(spec), P(AXIS))
    data, ids, valid = jax.lax.with_sharding_constraint((data, ids, valid), shard)
  sliced = spec.client.slice_params(params, depth)
  keys = jax.vmap(lambda i: jax.random.fold_in(round_key, i))(ids)
  delta, m = train_chunk(spec.client, depth, sliced, data, keys, round_index)
  if scheme is None:
    w = aggregate.client_weights(spec.weighting, m.num_examples, depth)
    naive = aggregate.counts_untrained(spec.weighting)
  else:
    w = aggregate.client_weights_from_vector(scheme, m.num_examples, depth)
    naive = scheme[2]
  w = jnp.where(valid & m.finite, w, 0.0)
  groups = _groups(spec, constrain)
  acc = _accumulate_depth(spec.client.model, acc, delta, w, depth, naive,
                          spec.client.deepest_only, groups)
  if groups > 1:
    acc = jax.lax.with_sharding_constraint(acc, NamedSharding(_mesh(spec), P(AXIS)))
  vals = {"loss": m.loss, "finite": m.finite, "weight": w,
          "num_examples": m.num_examples, "num_steps": m.num_steps}
  bufs = {k: jax.lax.dynamic_update_index_in_dim(bufs[k], vals[k].astype(bufs[k].dtype), j, 0)
          for k in bufs}
  return acc, bufs


def _groups(spec: RoundSpec, constrain: bool) -> int:
  """Partial sums the round's accumulator keeps: one per device when the chunk is spread over
  the mesh (_accumulate_depth), else 1."""
  return _mesh(spec).size if constrain else 1


def _start(model, params: PyTree, num_chunks: int, chunk: int, groups: int = 1):
  acc = aggregate.Accumulator(jax.tree.map(jnp.zeros_like, params),
                              trees.zero_denominator(model, params))
  if groups > 1:
    acc = jax.tree.map(lambda a: jnp.zeros((groups,) + a.shape, a.dtype), acc)
  shape = (num_chunks, chunk)
  bufs = {"loss": jnp.zeros(shape), "finite": jnp.zeros(shape, bool), "weight": jnp.zeros(shape),
          "num_examples": jnp.zeros(shape), "num_steps": jnp.zeros(shape, jnp.int32)}
  return acc, bufs


def _finish(spec: RoundSpec, state: server.ServerState, rng: jax.Array, acc, bufs,
            slots: jax.Array, groups: int = 1):
  """Masked mean -> server step; per-slot buffers -> per-client metrics in cohort order."""
  zeros = jax.tree.map(jnp.zeros_like, state.params)
  if groups > 1:
    acc = jax.tree.map(lambda a: jnp.sum(a, axis=0), acc)  # the devices' partial sums, once
  mean_delta = aggregate.finalize(acc, zeros)
  trained = jax.tree.map(lambda d: d > 0, acc.denominator)
  new_state = server.apply_update(state._replace(rng=rng), spec.server_optimizer, mean_delta,
                                  trained)
  per = {k: v.reshape(-1)[slots] for k, v in bufs.items()}
  ok = per["finite"]
  ex = per["num_examples"]
  metrics = dict(per)
  metrics["num_nonfinite"] = jnp.sum(~ok)
  metrics["total_examples"] = jnp.sum(ex)
  metrics["mean_loss"] = jnp.sum(jnp.where(ok, per["loss"] * ex, 0.0)) / jnp.maximum(
      jnp.sum(jnp.where(ok, ex, 0.0)), 1.0)
  metrics["update_norm"] = optax.tree.norm(mean_delta)
  return new_state, metrics


def _round(spec: RoundSpec, state, chunks, bounds, slots, dataset, scheme=None, constrain=True):
  rng, round_key = jax.random.split(state.rng)
  groups = _groups(spec, constrain)
  acc, bufs = _start(spec.client.model, state.params, *chunks[2].shape, groups=groups)
  if groups > 1:  # each device's partial sum on that device
    acc = jax.lax.with_sharding_constraint(acc, NamedSharding(_mesh(spec), P(AXIS)))
  carry = (acc, bufs)
  for li, d in enumerate(spec.depth_levels):
    body = functools.partial(_chunk_step, spec, d, state.params, state.round, round_key, chunks,
                             dataset, scheme, constrain)
    carry = jax.lax.fori_loop(bounds[li, 0], bounds[li, 1], body, carry)
  return _finish(spec, state, rng, *carry, slots, groups)


@functools.lru_cache(maxsize=None)
def _program(spec: RoundSpec):
  def program(state, chunks, bounds, slots, dataset):  # "jit_program" in JAX's cache logs
    return _round(spec, state, chunks, bounds, slots, dataset)
  # Replicated outputs: every process of a multi-process run reads the new state and metrics.
  return jax.jit(program, out_shardings=NamedSharding(_mesh(spec), P()))


def round_program(spec: RoundSpec):
  """The jitted round, program(state, chunks, bounds, slots, dataset) -> (state, metrics), with
  the arguments `prepare` builds: for lowering it (cost and memory analysis) or timing it alone."""
  return _program(spec)


def prepare(cohort: Cohort, spec: RoundSpec):
  """Host-side layout of a cohort: the program's arguments after the state, (chunks, bounds,
  slots, dataset). chunks = (data, ids, valid) [num_chunks, chunk, ...] placed sharded over the
  mesh; with a ResidentDataset, `data` is the clients' rows in it (a few bytes per client) and
  `dataset` its device arrays, else `dataset` is None."""
  chunks, bounds, slots, dataset = host_layout(cohort, spec)
  chunks = _to_device(chunks, NamedSharding(_mesh(spec), P(None, AXIS)))
  small = _to_device((bounds, slots), NamedSharding(_mesh(spec), P()))
  return (chunks, *small, dataset)


def host_layout(cohort: Cohort, spec: RoundSpec, weighting: str | None = None,
                one_device: bool = False):
  """prepare's arguments as host arrays (the dataset, if resident, as it is)."""
  weighting = spec.weighting if weighting is None else weighting
  if weighting == "homogeneous" and len(set(np.asarray(cohort.depths).tolist())) > 1:
    raise ValueError("weighting 'homogeneous' needs every client at one depth, got depths "
                     f"{sorted(set(np.asarray(cohort.depths).tolist()))}")
  k = len(cohort.depths)
  chunk = effective_chunk_size(spec, k, one_device)
  resident = isinstance(cohort.data, ResidentDataset)
  if resident:
    sizes = cohort.data.num_examples[np.asarray(cohort.client_ids)]
  else:
    sizes = np.asarray(cohort.data.example_mask).reshape(k, -1).sum(1)
  lay = layout(cohort.depths, spec.depth_levels, chunk, sizes)
  idx = np.maximum(lay.order, 0)
  valid = lay.order >= 0

  def arrange(a):
    a = np.asarray(a)[idx]
    return a.reshape((-1, chunk) + a.shape[1:])

  ids = arrange(np.asarray(cohort.client_ids, np.int32))
  if resident:
    data, dataset = ids, cohort.data.data  # rows of the resident dataset
  else:
    data = ClientData(*(arrange(a) for a in cohort.data))
    data = data._replace(example_mask=data.example_mask & valid.reshape(-1, chunk)[..., None])
    dataset = None
  return (data, ids, valid.reshape(-1, chunk)), lay.bounds, lay.slots, dataset


def run_round(state: server.ServerState, cohort: Cohort, spec: RoundSpec):
  """One federated round. Returns (new ServerState, metrics). metrics are device arrays (nothing
  waits for the device until you read them): per client in cohort order [K] "loss" (mean local
  training loss), "finite", "weight" (aggregation weight actually used: 0 if excluded),
  "num_examples", "num_steps" (real local steps); scalars "num_nonfinite", "total_examples",
  "mean_loss" (example-weighted over finite clients), "update_norm" (of the mean delta); and, as
  host numpy arrays, "depth" and "client_id" [K]."""
  model_lib.check_layout(spec.client.model, state.params)
  args = prepare(cohort, spec)
  state = _replicate(state, _mesh(spec))
  state, metrics = _program(spec)(state, *args)
  metrics["depth"] = np.asarray(cohort.depths)
  metrics["client_id"] = np.asarray(cohort.client_ids)
  return state, metrics


def run_round_reference(state: server.ServerState, cohort: Cohort, spec: RoundSpec):
  """The same round as a plain Python loop over clients, one jitted client at a time, then one
  masked_tree_mean over the stacked full-shaped deltas: the baseline every other simulator
  implements, and the reference the vectorised round is tested against."""
  rng, round_key = jax.random.split(state.rng)
  model = spec.client.model
  naive = aggregate.counts_untrained(spec.weighting)
  deltas, masks, weights, metrics = [], [], [], []
  cdata = cohort_data(cohort)
  for k, d in enumerate(np.asarray(cohort.depths).tolist()):
    data = ClientData(*(jnp.asarray(a[k]) for a in cdata))
    key = jax.random.fold_in(round_key, int(cohort.client_ids[k]))
    delta, m = _jit_train(spec.client, d)(spec.client.slice_params(state.params, d), data, key,
                                          state.round)
    w = aggregate.client_weights(spec.weighting, m.num_examples, d)
    weights.append(jnp.where(m.finite, w, 0.0))
    deep = spec.client.deepest_only
    deltas.append(trees.pad_to_full(model, delta, state.params, d, deep))
    masks.append(trees.depth_mask(model, state.params, d, everything=naive, deepest_only=deep))
    metrics.append(m)
  stack = lambda *xs: jnp.stack(xs)
  stacked, mask = jax.tree.map(stack, *deltas), jax.tree.map(stack, *masks)
  weights = jnp.stack(weights)
  zeros = jax.tree.map(jnp.zeros_like, state.params)
  mean_delta = aggregate.masked_tree_mean(stacked, mask, weights, zeros)
  trained = jax.tree.map(lambda d: d > 0, aggregate.weighted_sums(stacked, mask, weights).denominator)
  new_state = server.apply_update(state._replace(rng=rng), spec.server_optimizer, mean_delta,
                                  trained)
  out = {f: jnp.stack([getattr(m, f) for m in metrics]) for f in ("loss", "finite", "num_examples",
                                                                  "num_steps")}
  out["weight"] = weights
  out["num_nonfinite"] = jnp.sum(~out["finite"])
  return new_state, out


@functools.lru_cache(maxsize=None)
def _jit_train(client_spec: ClientSpec, depth: int):
  return jax.jit(functools.partial(train_client, client_spec, depth))
