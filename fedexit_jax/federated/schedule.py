"""Client learning rate as a function of the round: warm-up, then cosine decay.

A federated client starts a fresh optimizer every round, so an optax schedule over local steps
restarts each round; what a long fine-tuning run needs (wav2vec 2.0's warm-up and decay) is a
schedule over rounds. The round number is data (ServerState.round, traced into the compiled
round), so every round runs the same program. The client multiplies its optimizer's updates by
`scale(round)`: the same as scaling the learning rate, exactly, for optax's sgd, momentum, adam
and adamw, whose last transformation is the scale by -learning_rate (momentum's trace and adam's
moments are built from the gradients before it).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class WarmupCosine:
  """scale(r) for round r = 0, 1, ...: (r + 1) / warmup_rounds during the warm-up (so round 0
  already trains), then a cosine from 1 down to `final_fraction` at round total_rounds - 1, and
  `final_fraction` after it (a run extended past its planned rounds)."""
  warmup_rounds: int
  total_rounds: int
  final_fraction: float = 0.1

  def __post_init__(self):
    if self.warmup_rounds < 0 or self.total_rounds < 1 or self.warmup_rounds > self.total_rounds:
      raise ValueError(f"need 0 <= warmup_rounds <= total_rounds and total_rounds >= 1, got "
                       f"warmup_rounds={self.warmup_rounds}, total_rounds={self.total_rounds}")
    if not 0.0 <= self.final_fraction <= 1.0:
      raise ValueError(f"final_fraction must be in [0, 1], got {self.final_fraction}")

  def __call__(self, round_index: jax.Array) -> jax.Array:
    r = jnp.asarray(round_index, jnp.float32)
    warm = (r + 1.0) / max(self.warmup_rounds, 1)
    span = max(self.total_rounds - 1 - self.warmup_rounds, 1)
    t = jnp.clip((r - self.warmup_rounds) / span, 0.0, 1.0)
    cosine = self.final_fraction + (1.0 - self.final_fraction) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))
    return jnp.where(r < self.warmup_rounds, warm, cosine)
