"""Central evaluation of the global model at its exits.

Runs in fixed-size batches (the last one padded and masked) so one compiled function serves any
dataset size.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import numpy as np

from fedexit_jax.federated import trees
from fedexit_jax.federated.model import EarlyExitModel
from fedexit_jax.federated.objective import CrossEntropy, Objective

PyTree = Any


def _batches(n: int, batch_size: int):
  for start in range(0, n, batch_size):
    yield start, min(start + batch_size, n)


def _pad(a: np.ndarray, size: int) -> np.ndarray:
  return np.pad(a, [(0, size - a.shape[0])] + [(0, 0)] * (a.ndim - 1))


@functools.partial(jax.jit, static_argnums=(0, 1, 6))
def _eval_batch(model, objective, params, inputs, input_mask, labels, heads_at):
  head_rows = trees.select_exits(model, params, heads_at)  # static rows: the evaluated heads
  outputs = model.logits(head_rows, inputs, input_mask, heads_at[-1], heads_at)
  return objective.eval_outputs(outputs, labels)


def evaluate(model: EarlyExitModel, params: PyTree, inputs, input_mask, labels,
             batch_size: int = 64, heads_at: Sequence[int] | None = None,
             objective: Objective = CrossEntropy()) -> dict[str, np.ndarray]:
  """The global model at its exits on a central test set.

  params: the full trainable tree (one head row per exit of model.exits); inputs [M, ...],
  input_mask [M, ...] as the model reads them (speech: cached conv features [M, T, C] and frame
  masks [M, T]), labels [M, ...] as the objective reads them. heads_at: the exits to evaluate
  (default all; train.py passes only the exits some client trains). Returns numpy arrays over the
  n evaluated exits: the objective's per-exit metrics (objective.summarize; CrossEntropy: "error"
  [n] and "loss" [n], means over the M examples) and its per-example results [n, M, ...]
  (CrossEntropy: "correct" and "confidence", the max softmax probability, for
  confidence-threshold early exit).
  """
  exits = tuple(int(e) for e in model.exits)
  heads_at = exits if heads_at is None else tuple(int(e) for e in heads_at)
  if not heads_at or any(e not in exits for e in heads_at) or list(heads_at) != sorted(heads_at):
    raise ValueError(f"evaluate: heads_at {heads_at} must be increasing exits of {exits}")
  inputs, input_mask, labels = np.asarray(inputs), np.asarray(input_mask), np.asarray(labels)
  m = labels.shape[0]
  if m == 0:
    raise ValueError("evaluate: the test set is empty")
  bs = min(batch_size, m)
  parts: dict[str, list] = {}
  for s, e in _batches(m, bs):
    out = _eval_batch(model, objective, params, _pad(inputs[s:e], bs),
                      _pad(input_mask[s:e], bs), _pad(labels[s:e], bs), heads_at)
    for k, v in out.items():
      parts.setdefault(k, []).append(np.asarray(v)[:, :e - s])
  collected = {k: np.concatenate(v, axis=1) for k, v in parts.items()}
  return {**collected, **objective.summarize(collected)}
