"""Local training of one client as pure functions: client_init / client_step / client_final.

Everything is written for ONE client at a static depth on unbatched arrays; the round (simulate.py)
vmaps it over a chunk of clients. A client's params are the server's trainable tree sliced to its
depth (ClientSpec.slice_params): layers [:depth] and only the exit heads its loss reads, so deeper
layers and unread heads are neither run nor touched.

Uneven data sizes are data, not shape: every client's arrays are padded to the same N examples
with an `example_mask`. The local schedule always has the same number of steps S; a batch that
holds no real example is a no-op step (the whole state is kept with jnp.where), so a client with
fewer examples simply does fewer real steps, without a recompile.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedexit_jax.federated import trees
from fedexit_jax.federated.model import EarlyExitModel
from fedexit_jax.federated.objective import CrossEntropy, Objective, distillation
from fedexit_jax.federated.schedule import WarmupCosine

PyTree = Any
LOSSES = ("last", "sum", "distill")


@dataclasses.dataclass(frozen=True)
class ClientSpec:
  """Static description of local training (hashable: build it once, reuse it every round).

  model: the early-exit model (model.EarlyExitModel): its forward pass and parameter layout.
  objective: what the exits' outputs are scored with (objective.py): CrossEntropy for utterance
    classification (the default), CTC for speech recognition.
  loss: "last" = the objective at the client's deepest exit only (the paper); "sum" = summed over
    every exit <= depth; "distill" = "sum" plus DepthFL mutual self-distillation (each exit is
    pulled towards every other exit's detached softened prediction, KL averaged over the others).
  local_steps: if set, exactly this many steps cycling through the client's shuffled data;
    otherwise local_epochs passes of ceil(N / batch_size) steps each (N = padded size).
  prox_mu: FedProx coefficient (mu/2 * ||w - w_server||^2); 0 disables it.
  time_mask_prob, time_mask_span: SpecAugment-style time masking of the inputs at every local
    step (wav2vec 2.0 / HuBERT fine-tuning's mask_time_prob / mask_time_length): each frame
    starts a span of masked frames with this probability (see augment); 0 disables it. Inputs
    must be frames [N, T, C] (cached conv features).
  lr_schedule: the learning rate over rounds (schedule.WarmupCosine): the client's updates are
    scaled by lr_schedule(round); None keeps the optimizer's own rate every round.
  """
  model: EarlyExitModel
  optimizer: optax.GradientTransformation = optax.sgd(0.05)
  objective: Objective = CrossEntropy()
  loss: str = "last"
  local_epochs: int = 1
  local_steps: int | None = None
  batch_size: int = 8
  prox_mu: float = 0.0
  distill_weight: float = 1.0
  distill_temperature: float = 1.0
  time_mask_prob: float = 0.0
  time_mask_span: int = 10
  lr_schedule: WarmupCosine | None = None

  def __post_init__(self):
    if not isinstance(self.model, EarlyExitModel):
      raise TypeError(f"ClientSpec.model must be an EarlyExitModel (fedexit_jax.federated.model),"
                      f" got {type(self.model).__name__}")
    if not isinstance(self.objective, Objective):
      raise TypeError(f"ClientSpec.objective must be an Objective (fedexit_jax.federated."
                      f"objective), got {type(self.objective).__name__}")
    if self.loss not in LOSSES:
      raise ValueError(f"unknown client loss {self.loss!r}; choose one of {LOSSES}")
    if self.batch_size < 1 or self.local_epochs < 1 or (self.local_steps is not None
                                                         and self.local_steps < 1):
      raise ValueError(f"batch_size ({self.batch_size}), local_epochs ({self.local_epochs}) and "
                       f"local_steps ({self.local_steps}) must be >= 1")
    if not 0.0 <= self.time_mask_prob < 1.0 or self.time_mask_span < 1:
      raise ValueError(f"time_mask_prob must be in [0, 1) and time_mask_span >= 1, got "
                       f"{self.time_mask_prob}, {self.time_mask_span}")

  @property
  def exits(self) -> tuple[int, ...]:
    return tuple(int(e) for e in self.model.exits)

  def lr_scale(self, round_index: jax.Array | int) -> jax.Array | None:
    """What this round's updates are multiplied by (None: no schedule, nothing to multiply)."""
    return None if self.lr_schedule is None else self.lr_schedule(round_index)

  @property
  def deepest_only(self) -> bool:
    """The loss reads only the client's deepest exit, so that is the only head it trains."""
    return self.loss == "last"

  def heads_at(self, depth: int) -> tuple[int, ...]:
    """The exits whose heads a depth-`depth` client computes and trains."""
    start, stop = trees.exit_rows(self.exits, depth, self.deepest_only)
    return self.exits[start:stop]

  def slice_params(self, tree: PyTree, depth: int) -> PyTree:
    """The part of the server's trainable tree a depth-`depth` client holds and trains."""
    return trees.slice_to_depth(self.model, tree, depth, self.deepest_only)

  def num_steps(self, num_padded_examples: int) -> int:
    if self.local_steps is not None:
      return self.local_steps
    return self.local_epochs * math.ceil(num_padded_examples / self.batch_size)


class ClientData(NamedTuple):
  """One client's (padded) local data; the leading axis is the example axis N."""
  inputs: jax.Array        # [N, ...] what the model reads (speech: cached conv features
                           # [N, T, C], or waveforms [N, S] with a trainable feature encoder)
  input_mask: jax.Array    # [N, ...] its mask (speech: frame mask [N, T] or sample mask [N, S])
  labels: jax.Array        # [N, ...] int: a class [N], or token ids [N, U] (the objective reads it)
  example_mask: jax.Array  # [N] bool: False for padding examples


class ClientState(NamedTuple):
  params: PyTree
  opt_state: optax.OptState
  loss_sum: jax.Array   # sum of the data loss over the real steps taken
  num_steps: jax.Array  # real (non-empty) steps taken


class ClientMetrics(NamedTuple):
  loss: jax.Array         # mean training loss over the real local steps
  num_steps: jax.Array
  num_examples: jax.Array
  finite: jax.Array       # False if the update or the loss is not finite


def exit_outputs(spec: ClientSpec, depth: int, params: PyTree, batch: ClientData) -> PyTree:
  """The model's outputs (e.g. logits [n, B, C]) of the n exits the client trains,
  spec.heads_at(depth)."""
  return spec.model.logits(params, batch.inputs, batch.input_mask, depth, spec.heads_at(depth))


def data_loss(spec: ClientSpec, depth: int, params: PyTree, batch: ClientData) -> jax.Array:
  """The local objective on one (masked) batch, without the FedProx term."""
  outputs = exit_outputs(spec, depth, params, batch)
  m = batch.example_mask.astype(jnp.float32)
  denom = jnp.maximum(jnp.sum(m), 1.0)
  per_exit = jnp.sum(spec.objective.example_loss(outputs, batch.labels) * m, axis=-1) / denom
  if spec.loss == "last":
    return per_exit[-1]
  total = jnp.sum(per_exit)
  if spec.loss == "distill":
    total = total + spec.distill_weight * distillation(spec.objective, outputs,
                                                       batch.example_mask,
                                                       spec.distill_temperature)
  return total


def time_mask(key: jax.Array, shape: tuple[int, int], prob: float, span: int) -> jax.Array:
  """[B, T] bool, True on masked frames: each frame starts a span of `span` frames with
  probability `prob` (spans may overlap and run past the end)."""
  return spans(jax.random.uniform(key, shape) < prob, span)


def spans(starts: jax.Array, span: int) -> jax.Array:
  """[B, T] bool: True where a span of `span` frames begun at a True of `starts` covers."""
  count = jnp.cumsum(starts.astype(jnp.int32), axis=-1)
  before = jnp.pad(count, ((0, 0), (span, 0)))[:, :starts.shape[1]]  # starts up to t - span
  return count > before


def augment(spec: ClientSpec, batch: ClientData, key: jax.Array | None) -> ClientData:
  """The batch as a local step trains on: time-masked frames (spec.time_mask_prob) replaced by
  their utterance's mean feature over its valid frames. Not zeros: utterances of all-zero (or
  constant) feature vectors gave gradient norms of 1e5-1e12 against ~10 for real features in the
  test backbone (measured; LayerNorms over zero-variance vectors the likely cause)."""
  if not spec.time_mask_prob:
    return batch
  if key is None or batch.inputs.ndim != 3:
    raise ValueError("time masking needs a step key and frame inputs [B, T, C] (cached conv "
                     f"features), got inputs of shape {batch.inputs.shape}")
  b, t = batch.inputs.shape[:2]
  masked = time_mask(key, (b, t), spec.time_mask_prob, spec.time_mask_span)
  valid = batch.input_mask.astype(batch.inputs.dtype)[..., None]  # [B, T, 1]
  mean = (jnp.sum(batch.inputs * valid, axis=1, keepdims=True)
          / jnp.maximum(jnp.sum(valid, axis=1, keepdims=True), 1.0))
  return batch._replace(inputs=jnp.where(masked[..., None], mean, batch.inputs))


def step_keys(spec: ClientSpec, rng: jax.Array, num_steps: int) -> jax.Array | None:
  """One key per local step for the augmentation (None without it), independent of the
  batch schedule's key."""
  if not spec.time_mask_prob:
    return None
  return jax.random.split(jax.random.fold_in(rng, 1), num_steps)


def client_init(spec: ClientSpec, params: PyTree) -> ClientState:
  return ClientState(params, spec.optimizer.init(params), jnp.zeros((), jnp.float32),
                     jnp.zeros((), jnp.int32))


def client_step(spec: ClientSpec, depth: int, anchor: PyTree, state: ClientState,
                batch: ClientData, key: jax.Array | None = None,
                lr_scale: jax.Array | None = None) -> ClientState:
  """One local SGD step on a batch; a batch without real examples leaves the state unchanged.
  `anchor` is the server's (sliced) params, used by the FedProx term; `key` draws the step's
  augmentation (spec.time_mask_prob); `lr_scale` (spec.lr_scale(round)) multiplies the update."""
  batch = augment(spec, batch, key)

  def objective(p):
    loss = data_loss(spec, depth, p, batch)
    if spec.prox_mu:
      sq = sum(jnp.sum(jnp.square(a - b)) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(anchor)))
      return loss + 0.5 * spec.prox_mu * sq, loss
    return loss, loss

  (_, loss), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
  updates, opt_state = spec.optimizer.update(grads, state.opt_state, state.params)
  if lr_scale is not None:
    updates = jax.tree.map(lambda u: u * jnp.asarray(lr_scale, u.dtype), updates)
  params = optax.apply_updates(state.params, updates)
  has = jnp.any(batch.example_mask)
  new = ClientState(params, opt_state, state.loss_sum + loss, state.num_steps + 1)
  return jax.tree.map(lambda n, o: jnp.where(has, n, o), new, state)


def client_final(state: ClientState, anchor: PyTree, num_examples: jax.Array):
  """(delta = local params - server params, metrics)."""
  delta = jax.tree.map(jnp.subtract, state.params, anchor)
  loss = state.loss_sum / jnp.maximum(state.num_steps, 1)
  finite = jnp.isfinite(loss)
  for leaf in jax.tree.leaves(delta):
    finite = finite & jnp.all(jnp.isfinite(leaf))
  return delta, ClientMetrics(loss, state.num_steps, num_examples, finite)


def batch_schedule(spec: ClientSpec, example_mask: jax.Array, rng: jax.Array):
  """Example indices [S, B] and their mask [S, B] for the whole local run.

  Epoch mode: every epoch is a fresh shuffle with the real examples first, cut into ceil(N/B)
  batches; batches past the client's real data are all-padding (no-op steps). Step mode: one
  shuffle of the real examples, cycled.
  """
  n_pad = example_mask.shape[0]
  b = spec.batch_size
  n = jnp.sum(example_mask.astype(jnp.int32))

  def shuffle(key):  # real examples first, in random order; padding after
    return jnp.argsort(jnp.where(example_mask, jax.random.uniform(key, (n_pad,)), 2.0), stable=True)

  if spec.local_steps is None:
    nb = math.ceil(n_pad / b)
    perms = jax.vmap(shuffle)(jax.random.split(rng, spec.local_epochs))  # [E, N]
    idx = jnp.pad(perms, ((0, 0), (0, nb * b - n_pad)))
    ok = jnp.pad(jnp.ones_like(perms, bool), ((0, 0), (0, nb * b - n_pad)))
    idx, ok = idx.reshape(-1, b), ok.reshape(-1, b)
    return idx, ok & example_mask[idx]
  perm = shuffle(rng)
  pos = (jnp.arange(spec.local_steps)[:, None] * b + jnp.arange(b)[None, :]) % jnp.maximum(n, 1)
  idx = perm[pos]
  return idx, example_mask[idx] & (n > 0)


def train_client(spec: ClientSpec, depth: int, params: PyTree, data: ClientData,
                 rng: jax.Array, round_index: jax.Array | int = 0):
  """init -> lax.scan(client_step) -> final for one client. params: spec.slice_params(server,
  depth); round_index: the server's round (ServerState.round), read by spec.lr_schedule only.
  Returns (delta sliced to depth, ClientMetrics)."""
  idx, ok = batch_schedule(spec, data.example_mask, rng)
  keys = step_keys(spec, rng, idx.shape[0])
  scale = spec.lr_scale(round_index)

  def body(state, sel):
    i, m, key = sel
    batch = ClientData(data.inputs[i], data.input_mask[i], data.labels[i], m)
    # Skip empty batches for real when running one client at a time (a cond on an unbatched
    # predicate); under vmap the cond becomes a select and client_step's own masking decides.
    state = jax.lax.cond(jnp.any(m),
                         lambda s: client_step(spec, depth, params, s, batch, key, scale),
                         lambda s: s, state)
    return state, None

  state, _ = jax.lax.scan(body, client_init(spec, params), (idx, ok, keys))
  return client_final(state, params, jnp.sum(data.example_mask.astype(jnp.float32)))


def train_chunk(spec: ClientSpec, depth: int, params: PyTree, data: ClientData, rngs: jax.Array,
                round_index: jax.Array | int = 0):
  """train_client for a chunk of clients at once (leading axis c on data, rngs and the outputs;
  one round_index for all).

  The local-step loop runs outside the vmap, so a step at which no client of the chunk has a real
  example is skipped outright (lax.cond on an unbatched predicate) rather than computed and
  masked: with uneven data sizes most of the padded steps cost nothing. Equal to vmapping
  train_client, up to float rounding.
  """
  idx, ok = jax.vmap(functools.partial(batch_schedule, spec))(data.example_mask, rngs)  # [c, S, B]
  c, num_steps = ok.shape[:2]
  keys = None
  if spec.time_mask_prob:
    keys = jnp.swapaxes(jax.vmap(lambda r: step_keys(spec, r, num_steps))(rngs), 0, 1)  # [S, c]
  state = jax.tree.map(lambda x: jnp.broadcast_to(x, (c,) + jnp.shape(x)), client_init(spec, params))
  step = jax.vmap(functools.partial(client_step, spec, depth, params,
                                    lr_scale=spec.lr_scale(round_index)),
                  in_axes=(0, 0, None if keys is None else 0))
  gather = jax.vmap(lambda d, i, m: ClientData(d.inputs[i], d.input_mask[i], d.labels[i], m))

  def body(state, sel):
    i, m, key = sel  # [c, B], [c, B], [c] keys
    return jax.lax.cond(jnp.any(m), lambda s: step(s, gather(data, i, m), key), lambda s: s,
                        state), None

  state, _ = jax.lax.scan(body, state, (jnp.swapaxes(idx, 0, 1), jnp.swapaxes(ok, 0, 1), keys))
  n = jnp.sum(data.example_mask.astype(jnp.float32), axis=1)
  return jax.vmap(client_final, in_axes=(0, None, 0))(state, params, n)
