"""Server state and server optimizers (Reddi et al., "Adaptive Federated Optimization").

The aggregated client update is treated as a pseudo-gradient g = -(mean client delta) and fed to
an optax transformation: FedAvg is SGD with server learning rate 1 (the new model is exactly the
masked mean of the client models), FedAvgM adds momentum, FedAdam/FedYogi are Adam/Yogi.
Where no sampled client trained a parameter its value is kept as is, as Eq. 1 requires, even
under a stateful optimizer whose momentum would otherwise keep moving it.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any

SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi")


class ServerState(NamedTuple):
  params: PyTree          # the trainable tree {"backbone": ..., "heads": ...}
  opt_state: optax.OptState
  round: jax.Array        # int32 scalar: rounds completed
  rng: jax.Array          # PRNG key, split once per round (so a resumed run continues exactly)


def server_optimizer(name: str = "fedavg", learning_rate: float | None = None,
                     momentum: float = 0.9, b1: float = 0.9, b2: float = 0.99,
                     eps: float = 1e-3) -> optax.GradientTransformation:
  """A named server optimizer. Default learning rates: 1.0 for fedavg/fedavgm, 1e-2 for
  fedadam/fedyogi; eps=1e-3 as in Reddi et al. (it bounds the adaptive step)."""
  if name == "fedavg":
    return optax.sgd(1.0 if learning_rate is None else learning_rate)
  if name == "fedavgm":
    return optax.sgd(1.0 if learning_rate is None else learning_rate, momentum=momentum)
  if name == "fedadam":
    return optax.adam(1e-2 if learning_rate is None else learning_rate, b1=b1, b2=b2, eps=eps)
  if name == "fedyogi":
    return optax.yogi(1e-2 if learning_rate is None else learning_rate, b1=b1, b2=b2, eps=eps)
  raise ValueError(f"unknown server optimizer {name!r}; choose one of {SERVER_OPTIMIZERS}")


def init_server_state(params: PyTree, optimizer: optax.GradientTransformation,
                      rng: jax.Array) -> ServerState:
  """The server state at round 0. `params` is the trainable tree (see trees.split_params)."""
  params = jax.tree.map(jnp.asarray, params)
  return ServerState(params, optimizer.init(params), jnp.zeros((), jnp.int32), rng)


def apply_update(state: ServerState, optimizer: optax.GradientTransformation,
                 mean_delta: PyTree, trained: PyTree) -> ServerState:
  """One server step on the aggregated delta; `trained` (bool, broadcastable per leaf) marks the
  parameters that at least one client trained this round; the rest keep their value."""
  grads = jax.tree.map(jnp.negative, mean_delta)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = jax.tree.map(
      lambda p, u, t: jnp.where(t, p + u.astype(p.dtype), p), state.params, updates, trained)
  return ServerState(params, opt_state, state.round + 1, state.rng)
