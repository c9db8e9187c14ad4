"""What the real-corpus loaders (voxceleb, iemocap, librispeech) share: decode a list of rows into
`Utterances`, skipping or naming unreadable files, cached as one .npz.

A loader only parses its corpus's metadata into `Row`s (raising `DataError` naming the file and
line of anything wrong); decoding, normalising, cutting, padding and caching happen here, once.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from fedexit_jax.data import audio
from fedexit_jax.data.speech_commands import DataError
from fedexit_jax.data import utterances
from fedexit_jax.data.utterances import Utterances, stack

log = logging.getLogger(__name__)

_CACHE_VERSION = 1


class Row(NamedTuple):
  """One utterance as the metadata describes it, before decoding."""
  file: str      # path relative to the corpus root
  label: int     # index into class_names, -1 for none
  text: str
  speaker: str
  split: str


def max_samples(max_seconds: float) -> int:
  if not max_seconds > 0:
    raise ValueError(f"max_seconds must be positive, got {max_seconds}")
  return int(round(max_seconds * audio.SAMPLE_RATE))


def _decode(root: str, rows: Sequence[Row], limit: int, skip_errors: bool,
            progress: Optional[bool]) -> Tuple[List[np.ndarray], List[int], int]:
  """(normalised waves cut to `limit`, indices of the decoded rows, number skipped)."""
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  waves, kept, skipped = [], [], []
  disable = None if progress is None else not progress  # None: on when writing to a terminal
  for i, row in enumerate(tqdm(rows, desc="decoding", unit="file", disable=disable)):
    try:
      x = audio.load(os.path.join(root, row.file))
    except audio.AudioError as e:
      if not skip_errors:
        raise
      skipped.append(str(e))
      continue
    waves.append(audio.normalize(x[:limit]))  # statistics over the samples that are kept
    kept.append(i)
  if skipped:
    log.warning("%s: skipped %d unreadable file(s), e.g. %s", root, len(skipped), skipped[0])
  return waves, kept, len(skipped)


def _cache_key(name: str, root: str, rows: Sequence[Row], settings: dict) -> str:
  """Covers the arguments, every row and every audio file's size and mtime, so an edited corpus
  is decoded again."""
  h = hashlib.sha1(json.dumps(dict(version=_CACHE_VERSION, name=name, root=root, **settings),
                              sort_keys=True).encode())
  for row in rows:
    st = os.stat(os.path.join(root, row.file))
    h.update(json.dumps(list(row) + [st.st_size, st.st_mtime_ns]).encode())
  return h.hexdigest()[:16]


def build(name: str, root: str, rows: Sequence[Row], class_names: Tuple[str, ...],
          max_seconds: float, skip_errors: bool = False, progress: Optional[bool] = None,
          cache_dir: Optional[str] = None, use_cache: bool = True,
          num_skipped: int = 0) -> Utterances:
  """Rows -> Utterances: decoded at 16 kHz, cut to max_seconds, normalised over the kept samples,
  zero-padded to the longest. An unreadable file raises AudioError naming it, or with
  `skip_errors` is skipped and counted (on top of `num_skipped`, what the loader already
  skipped). cache_dir: default `<root>/.fedexit_cache`."""
  limit = max_samples(max_seconds)
  key = None
  if use_cache:
    key = _cache_key(name, root, rows, dict(limit=limit, skip_errors=skip_errors,
                                            class_names=list(class_names),
                                            num_skipped=num_skipped))
    cache_dir = os.path.join(root, ".fedexit_cache") if cache_dir is None else os.fspath(cache_dir)
    cache_file = os.path.join(cache_dir, f"{name}_{key}.npz")
    if os.path.isfile(cache_file):
      with np.load(cache_file, allow_pickle=False) as z:
        return Utterances(**{k: z[k] for k in Utterances._fields
                             if k not in ("class_names", "num_skipped")},
                          class_names=tuple(str(c) for c in z["class_names"]),
                          num_skipped=int(z["num_skipped"]))

  waves, kept, skipped = _decode(root, rows, limit, skip_errors, progress)
  if not kept:
    raise DataError(f"{root}: none of the {len(rows)} {name} utterance(s) could be read")
  keep = [rows[i] for i in kept]
  waveforms, lengths = stack(waves, limit)
  data = Utterances(waveforms, lengths, np.asarray([r.label for r in keep], np.int32),
                    *(np.asarray([getattr(r, k) for r in keep], dtype=str)
                      for k in ("text", "speaker", "split", "file")),
                    class_names=tuple(class_names), num_skipped=num_skipped + skipped)
  if use_cache:
    utterances.save_cache(cache_file, data)
  return data


def read_lines(path: str, what: str) -> List[Tuple[int, str]]:
  """(1-based line number, stripped line) of every non-blank line; DataError if missing."""
  if not os.path.isfile(path):
    raise DataError(f"{path} is missing: {what}")
  with open(path, encoding="utf-8") as f:
    return [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]
