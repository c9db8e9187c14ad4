"""Device tiers: which clients can train how deep, and how fast they are.

A tier is config: the fraction of clients in it, the deepest layer (an exit) its clients train,
and a relative compute speed (1.0 = the fastest device; used for simulated wall-clock). The
paper's default is two tiers of 50%: low-resource clients capped at layer 3 and high-resource
clients at the task's best layer. Depths can also be given per client explicitly.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tier:
  name: str
  fraction: float
  max_depth: int
  speed: float = 1.0

  def __post_init__(self):
    if not 0.0 <= self.fraction <= 1.0:
      raise ValueError(f"tier {self.name!r}: fraction {self.fraction} is not in [0, 1]")
    if self.max_depth < 1:
      raise ValueError(f"tier {self.name!r}: max_depth {self.max_depth} must be >= 1")
    if self.speed <= 0:
      raise ValueError(f"tier {self.name!r}: speed {self.speed} must be > 0")


def paper_tiers(best_depth: int, low_depth: int = 3, low_speed: float = 0.25) -> tuple[Tier, ...]:
  """The paper's two tiers: 50% capped at `low_depth`, 50% at the task's best layer
  (6 for keyword spotting, 9 for ASR, emotion and speaker id)."""
  return (Tier("low", 0.5, low_depth, low_speed), Tier("high", 0.5, best_depth, 1.0))


def homogeneous_tiers(depth: int) -> tuple[Tier, ...]:
  """Every client at one depth (the homogeneous-FL scenario)."""
  return (Tier("all", 1.0, depth, 1.0),)


def tier_counts(num_clients: int, tiers: Sequence[Tier]) -> np.ndarray:
  """Exact client counts per tier (largest remainder), summing to num_clients."""
  fr = np.array([t.fraction for t in tiers], np.float64)
  if not tiers or abs(fr.sum() - 1.0) > 1e-6:
    raise ValueError(f"tier fractions must sum to 1, got {fr.tolist()} for "
                     f"{[t.name for t in tiers]}")
  raw = fr * num_clients
  counts = np.floor(raw).astype(np.int64)
  rest = num_clients - counts.sum()
  counts[np.argsort(-(raw - counts), kind="stable")[:rest]] += 1
  return counts


def assign_tiers(num_clients: int, tiers: Sequence[Tier], seed: int) -> np.ndarray:
  """Tier index of every client: exact fractions, shuffled deterministically from `seed`."""
  counts = tier_counts(num_clients, tiers)
  idx = np.repeat(np.arange(len(tiers)), counts)
  return np.random.default_rng([seed, 0x7135]).permutation(idx)


def client_depths(num_clients: int, tiers: Sequence[Tier], seed: int,
                  num_layers: int | None = None) -> np.ndarray:
  """Maximum trained depth of every client [num_clients] from its tier."""
  if num_layers is not None:
    for t in tiers:
      if t.max_depth > num_layers:
        raise ValueError(f"tier {t.name!r} has max_depth {t.max_depth} but the backbone has only "
                         f"{num_layers} layers")
  depth_of_tier = np.array([t.max_depth for t in tiers], np.int32)
  return depth_of_tier[assign_tiers(num_clients, tiers, seed)]


def explicit_depths(depths: Sequence[int], exits: Sequence[int], num_layers: int) -> np.ndarray:
  """Per-client depths given directly; each must be an exit layer within the backbone."""
  d = np.asarray(depths, np.int32)
  bad = sorted({int(x) for x in d if x not in exits or not 1 <= x <= num_layers})
  if bad:
    raise ValueError(f"client depths {bad} are not exit layers {tuple(exits)} within "
                     f"1..{num_layers}")
  return d
