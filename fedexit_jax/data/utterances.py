"""Decoded utterances of any task's corpus, as arrays: what every corpus loader returns (speaker
id, emotion, ASR; keyword spotting keeps its own speech_commands.KeywordData, the same idea).

Variable-length audio is cut to at most `max_samples` and zero-padded; `lengths` keeps the real
sample count, so the padded tail is masked out downstream (data, not shape).
"""
from __future__ import annotations

import logging
import os
from typing import NamedTuple, Sequence, Tuple

import numpy as np

log = logging.getLogger(__name__)


class Utterances(NamedTuple):
  waveforms: np.ndarray    # float32 [N, S], normalised over the real samples, zero-padded
  lengths: np.ndarray      # int32 [N], real samples per row (<= S)
  labels: np.ndarray       # int32 [N], index into class_names (-1: no class, e.g. ASR)
  texts: np.ndarray        # str [N], transcript ('' when the task has none)
  speakers: np.ndarray     # str [N], speaker id
  splits: np.ndarray       # str [N], e.g. "train", "test", "verify" (the loader says which)
  files: np.ndarray        # str [N], path relative to the corpus root
  class_names: Tuple[str, ...]
  num_skipped: int         # unreadable files skipped (skip_errors=True)


def take(data: Utterances, idx: Sequence[int]) -> Utterances:
  """The rows idx (an Utterances again)."""
  idx = np.asarray(idx, np.int64)
  return data._replace(**{k: getattr(data, k)[idx] for k in
                          ("waveforms", "lengths", "labels", "texts", "speakers", "splits",
                           "files")})


def select(data: Utterances, split: str) -> Utterances:
  """The rows of one split."""
  return take(data, np.flatnonzero(data.splits == split))


def stack(waves: Sequence[np.ndarray], max_samples: int) -> Tuple[np.ndarray, np.ndarray]:
  """Normalised 1-D waveforms -> (float32 [N, S] zero-padded, int32 lengths [N]), where S is the
  longest clip capped at max_samples (longer clips are cut)."""
  lengths = np.asarray([min(len(w), max_samples) for w in waves], np.int32)
  s = int(lengths.max()) if len(lengths) else 0
  out = np.zeros((len(waves), s), np.float32)
  for i, w in enumerate(waves):
    out[i, :lengths[i]] = w[:lengths[i]]
  return out, lengths


def save_cache(cache_file: str, data: NamedTuple) -> None:
  """Writes a decoded corpus (Utterances or speech_commands.KeywordData) as one .npz, atomically;
  a failure only costs decoding again next time."""
  try:
    os.makedirs(os.path.dirname(cache_file), exist_ok=True)
    tmp = f"{cache_file}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **{k: v for k, v in data._asdict().items() if k != "class_names"},
             class_names=np.asarray(data.class_names, dtype=str))
    os.replace(tmp, cache_file)
  except OSError as e:
    log.warning("could not write the cache %s (%s); the next load decodes again", cache_file, e)
