"""Per-round client sampling, a pure function of (seed, round) so that a resumed run samples
exactly the clients an uninterrupted one would."""
from __future__ import annotations

import numpy as np


def num_sampled(num_clients: int, clients_per_round: int | None = None,
                fraction: float | None = None) -> int:
  """The cohort size from a count or a fraction (at least one client)."""
  if (clients_per_round is None) == (fraction is None):
    raise ValueError("give exactly one of clients_per_round and fraction")
  k = clients_per_round if clients_per_round is not None else max(1, round(fraction * num_clients))
  if not 1 <= k <= num_clients:
    raise ValueError(f"cannot sample {k} clients per round from {num_clients} clients")
  return int(k)


def sample_clients(seed: int, round_index: int, num_clients: int,
                   clients_per_round: int | None = None,
                   fraction: float | None = None) -> np.ndarray:
  """Sorted ids of the clients sampled in round `round_index`, without replacement."""
  k = num_sampled(num_clients, clients_per_round, fraction)
  rng = np.random.default_rng([int(seed), int(round_index), 0x5A3])
  return np.sort(rng.choice(num_clients, size=k, replace=False)).astype(np.int32)
