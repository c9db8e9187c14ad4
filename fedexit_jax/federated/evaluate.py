"""Central evaluation of the global model at its exits.

Runs in fixed-size batches (the last one padded and masked) so one compiled function serves any
dataset size.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fedexit_jax.federated import trees
from fedexit_jax.federated.model import EarlyExitModel

PyTree = Any


def _batches(n: int, batch_size: int):
  for start in range(0, n, batch_size):
    yield start, min(start + batch_size, n)


def _pad(a: np.ndarray, size: int) -> np.ndarray:
  return np.pad(a, [(0, size - a.shape[0])] + [(0, 0)] * (a.ndim - 1))


@functools.partial(jax.jit, static_argnums=(0, 5))
def _eval_batch(model, params, inputs, input_mask, labels, heads_at):
  head_rows = trees.select_exits(model, params, heads_at)  # static rows: the evaluated heads
  logits = model.logits(head_rows, inputs, input_mask, heads_at[-1], heads_at)  # [n, B, C]
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, labels[None, :, None].astype(jnp.int32), axis=-1)[..., 0]
  pred = jnp.argmax(logits, axis=-1)
  return pred == labels[None], nll, jnp.max(jnp.exp(logp), axis=-1)


def evaluate(model: EarlyExitModel, params: PyTree, inputs, input_mask, labels,
             batch_size: int = 64, heads_at: Sequence[int] | None = None
             ) -> dict[str, np.ndarray]:
  """Error of the global model at its exits on a central test set.

  params: the full trainable tree (one head row per exit of model.exits); inputs [M, ...],
  input_mask [M, ...] as the model reads them (speech: cached conv features [M, T, C] and frame
  masks [M, T]), labels [M]. heads_at: the exits to evaluate (default all; train.py passes only
  the exits some client trains). Returns numpy arrays over the n evaluated exits: "error" [n] and
  "loss" [n] (mean over the M examples), and per example "correct" [n, M] and "confidence"
  [n, M] (max softmax probability, for confidence-threshold early exit).
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
  correct, nll, conf = [], [], []
  for s, e in _batches(m, bs):
    c, l, p = _eval_batch(model, params, _pad(inputs[s:e], bs), _pad(input_mask[s:e], bs),
                          _pad(labels[s:e], bs), heads_at)
    correct.append(np.asarray(c)[:, :e - s])
    nll.append(np.asarray(l)[:, :e - s])
    conf.append(np.asarray(p)[:, :e - s])
  correct, nll, conf = (np.concatenate(x, axis=1) for x in (correct, nll, conf))
  return {"error": 1.0 - correct.mean(axis=1), "loss": nll.mean(axis=1), "correct": correct,
          "confidence": conf}
