"""train_replicas(configs, workdirs): several runs (other seeds, other weighting schemes) trained
by one compiled round program (federated.replicas), each with its own workdir, metrics,
checkpoints and report exactly as `train_and_evaluate` writes them.

The runs must share the program's shapes: their configs may differ only in `seed` and
`weighting`. Runs are grouped by what the program needs equal (the resumed round, the client
data's shapes, the round spec up to the scheme); each group trains together, groups one after
another. A seed moves the partition, and with it the clients' padded example count: seeds whose
partitions pad alike share a group, the others get their own (a replica is never padded beyond
its own run: that would change its local shuffles).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
import tqdm

from fedexit_jax import checkpoint, config_utils, train
from fedexit_jax import federated as fl

log = logging.getLogger(__name__)

VARYING_KEYS = ("seed", "weighting")


def check_compatible(configs: Sequence[ml_collections.ConfigDict]) -> None:
  """ValueError unless the configs differ only in VARYING_KEYS (and progress_bar)."""
  first = json.loads(config_utils.config_to_json(configs[0]))
  for c in configs[1:]:
    diffs = checkpoint._config_diff(first, json.loads(config_utils.config_to_json(c)))
    bad = [d for d in diffs if d.split(":")[0] not in VARYING_KEYS + ("progress_bar",)]
    if bad:
      raise ValueError(f"replicas share one program: their configs may differ only in "
                       f"{VARYING_KEYS}, got {'; '.join(bad[:5])}")


def train_replicas(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str | Path],
                   resume: bool = True, batch: int | None = None,
                   progress: bool = True) -> list[dict[str, Any]]:
  """Trains (or resumes) every run; returns each run's train_and_evaluate result, in order."""
  if len(configs) != len(workdirs) or not configs:
    raise ValueError(f"{len(configs)} configs for {len(workdirs)} workdirs")
  if len({str(Path(w).absolute()) for w in workdirs}) != len(workdirs):
    raise ValueError("every replica needs its own workdir")
  check_compatible(configs)
  sims = [train.Simulation(c, w, resume) for c, w in zip(configs, workdirs)]
  if jax.process_count() > 1:
    raise ValueError("replicas run in one process; start separate runs under fedexit launch")
  results: list[dict[str, Any] | None] = [None] * len(sims)
  for group in _groups(sims):
    for i, out in zip(group, _train_group([sims[i] for i in group], batch, progress)):
      results[i] = out
  return results


def _groups(sims) -> list[list[int]]:
  """Indices of the simulations that can share a program: the same resumed round and client
  data shapes (their configs agree up to seed and scheme, so their round specs do too: the
  specs' optimizers are equal transformations, if not equal Python objects)."""
  keys: dict[Any, list[int]] = {}
  for i, s in enumerate(sims):
    shapes = tuple(np.shape(a) for a in s.data.clients)
    keys.setdefault((s.done, shapes), []).append(i)
  return list(keys.values())


def _train_group(sims, batch, progress) -> list[dict[str, Any]]:
  # the group's round: the first run's spec over every depth of the group (the scheme is data)
  levels = tuple(sorted({d for s in sims for d in s.spec.depth_levels}))
  spec = dataclasses.replace(sims[0].spec, depth_levels=levels, weighting="paper")
  placed: dict[int, fl.ResidentDataset] = {}  # runs of one seed share their (memoised) data
  for s in sims:
    if id(s.data.clients) not in placed:
      placed[id(s.data.clients)] = fl.place_dataset(s.data.clients, spec)
  residents = [placed[id(s.data.clients)] for s in sims]
  weightings = [s.config.weighting for s in sims]
  states = fl.stack_states([s.state for s in sims])
  done, rounds = sims[0].done, sims[0].config.rounds
  log.info("training %d replicas in one program (%s), rounds %d..%d", len(sims),
           ", ".join(f"seed {s.config.seed} {w}" for s, w in zip(sims, weightings)), done + 1,
           rounds)
  for r in tqdm.trange(done, rounds, initial=done, total=rounds, desc=f"{len(sims)} replicas",
                       disable=not progress, dynamic_ncols=True):
    cohorts = [s.cohort(res, r) for s, res in zip(sims, residents)]
    states, m = fl.run_replicas(states, cohorts, spec, weightings, batch=batch)
    c = sims[0].config  # eval and checkpoint cadence: the same for every replica
    needs_state = (r + 1) % c.eval_every == 0 or (r + 1) % c.checkpoint_every == 0 or \
        r + 1 == rounds
    for i, s in enumerate(sims):
      if needs_state:  # slicing every leaf of R states costs dispatches: only when read
        s.state = fl.unstack_state(states, i)
      s.after_round(r, jax.tree.map(lambda x, i=i: x[i], m), cohorts[i])
  return [s.finish() for s in sims]
