"""Frozen conv features, computed once: with the feature encoder frozen, a client's local steps
read cached features instead of re-running the CNN every step.

Runs in fixed-size batches (the last one padded) so one compiled function serves any size.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from fedexit_jax.models import wav2vec2
from fedexit_jax.models.config import EncoderConfig

PyTree = Any


def _pad(a: np.ndarray, size: int) -> np.ndarray:
  return np.pad(a, [(0, size - a.shape[0])] + [(0, 0)] * (a.ndim - 1))


@functools.partial(jax.jit, static_argnums=(0, 4))
def _features_batch(config, frozen, waveform, attention_mask, mask_group_norm):
  return wav2vec2.extract_features(config, frozen, waveform, attention_mask, mask_group_norm)


def cache_features(config: EncoderConfig, frozen: PyTree, waveforms, attention_mask=None,
                   batch_size: int = 64, mask_group_norm: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Runs the frozen conv feature encoder once over every utterance.

  waveforms [..., S] (any leading axes, e.g. [clients, examples, S]); attention_mask like it or
  None. Returns (features [..., T, C], frame_mask [..., T]) as numpy arrays, to be stored and
  reused every round instead of recomputed every local step. `frozen` needs "feature_extractor".
  mask_group_norm: see modules.FeatureEncoder (utterances of different lengths).
  """
  if "feature_extractor" not in frozen:
    raise ValueError("cache_features: params have no 'feature_extractor' (pass the frozen part of "
                     "models.split_params or the full wav2vec2 params)")
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
  for s in range(0, n, bs):
    e = min(s + bs, n)
    f, m = _features_batch(config, fe, _pad(w[s:e], bs), _pad(am[s:e], bs), mask_group_norm)
    feats.append(np.asarray(f)[:e - s])
    masks.append(np.asarray(m)[:e - s])
  f, m = np.concatenate(feats), np.concatenate(masks)
  return f.reshape(lead + f.shape[1:]), m.reshape(lead + m.shape[1:])
