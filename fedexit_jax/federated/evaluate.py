"""Central evaluation of the global model at every exit, and caching of frozen conv features.

Both run in fixed-size batches (the last one padded and masked) so one compiled function serves
any dataset size.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fedexit_jax.models import early_exit, wav2vec2
from fedexit_jax.models.config import EncoderConfig

PyTree = Any


def _batches(n: int, batch_size: int):
  for start in range(0, n, batch_size):
    yield start, min(start + batch_size, n)


def _pad(a: np.ndarray, size: int) -> np.ndarray:
  return np.pad(a, [(0, size - a.shape[0])] + [(0, 0)] * (a.ndim - 1))


@functools.partial(jax.jit, static_argnums=(0, 5, 6))
def _eval_batch(config, params, features, frame_mask, labels, exits, heads_at):
  rows = np.asarray([exits.index(e) for e in heads_at])  # static: the evaluated heads' rows
  head_params = jax.tree.map(lambda x: x[rows], params["heads"])
  logits = early_exit.exit_logits(config, params["backbone"], head_params, features,
                                  frame_mask, exits, heads_at[-1], heads_at=heads_at)  # [n, B, C]
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, labels[None, :, None].astype(jnp.int32), axis=-1)[..., 0]
  pred = jnp.argmax(logits, axis=-1)
  return pred == labels[None], nll, jnp.max(jnp.exp(logp), axis=-1)


def evaluate(config: EncoderConfig, params: PyTree, features, frame_mask, labels,
             exits: Sequence[int], batch_size: int = 64,
             heads_at: Sequence[int] | None = None) -> dict[str, np.ndarray]:
  """Error of the global model at its exits on a central test set.

  params: the trainable tree {"backbone", "heads"} with one head row per exit of `exits`;
  features [M, T, C] cached conv features, frame_mask [M, T], labels [M]. heads_at: the exits to
  evaluate (default all; train.py passes only the exits some client trains). Returns numpy arrays
  over the n evaluated exits: "error" [n] and "loss" [n] (mean over the M examples), and per
  example "correct" [n, M] and "confidence" [n, M] (max softmax probability, for
  confidence-threshold early exit).
  """
  exits = tuple(int(e) for e in exits)
  heads_at = exits if heads_at is None else tuple(int(e) for e in heads_at)
  if not heads_at or any(e not in exits for e in heads_at) or list(heads_at) != sorted(heads_at):
    raise ValueError(f"evaluate: heads_at {heads_at} must be increasing exits of {exits}")
  features, frame_mask, labels = np.asarray(features), np.asarray(frame_mask), np.asarray(labels)
  m = labels.shape[0]
  if m == 0:
    raise ValueError("evaluate: the test set is empty")
  bs = min(batch_size, m)
  correct, nll, conf = [], [], []
  for s, e in _batches(m, bs):
    c, l, p = _eval_batch(config, params, _pad(features[s:e], bs), _pad(frame_mask[s:e], bs),
                          _pad(labels[s:e], bs), exits, heads_at)
    correct.append(np.asarray(c)[:, :e - s])
    nll.append(np.asarray(l)[:, :e - s])
    conf.append(np.asarray(p)[:, :e - s])
  correct, nll, conf = (np.concatenate(x, axis=1) for x in (correct, nll, conf))
  return {"error": 1.0 - correct.mean(axis=1), "loss": nll.mean(axis=1), "correct": correct,
          "confidence": conf}


@functools.partial(jax.jit, static_argnums=(0,))
def _features_batch(config, frozen, waveform, attention_mask):
  return wav2vec2.extract_features(config, frozen, waveform, attention_mask)


def cache_features(config: EncoderConfig, frozen: PyTree, waveforms, attention_mask=None,
                   batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
  """Runs the frozen conv feature encoder once over every utterance.

  waveforms [..., S] (any leading axes, e.g. [clients, examples, S]); attention_mask like it or
  None. Returns (features [..., T, C], frame_mask [..., T]) as numpy arrays, to be stored and
  reused every round instead of recomputed every local step. `frozen` needs "feature_extractor".
  """
  if "feature_extractor" not in frozen:
    raise ValueError("cache_features: params have no 'feature_extractor' (pass the frozen part of "
                     "trees.split_params or the full wav2vec2 params)")
  w = np.asarray(waveforms, np.float32)
  lead = w.shape[:-1]
  w = w.reshape(-1, w.shape[-1])
  am = None if attention_mask is None else np.asarray(attention_mask).reshape(w.shape)
  if am is None:
    am = np.ones(w.shape, bool)
  fe = {"feature_extractor": frozen["feature_extractor"]}
  n = w.shape[0]
  bs = min(batch_size, n)
  feats, masks = [], []
  for s, e in _batches(n, bs):
    f, m = _features_batch(config, fe, _pad(w[s:e], bs), _pad(am[s:e], bs))
    feats.append(np.asarray(f)[:e - s])
    masks.append(np.asarray(m)[:e - s])
  f, m = np.concatenate(feats), np.concatenate(masks)
  return f.reshape(lead + f.shape[1:]), m.reshape(lead + m.shape[1:])
