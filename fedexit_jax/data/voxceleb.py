"""VoxCeleb1 from a local folder: speaker identification (the official split) and verification
trials, as `Utterances`.

Layout: `<root>/wav/idXXXXX/<video_id>/<nnnnn>.wav`; `<root>/iden_split.txt`, lines
`1 id10001/1zcIwhmdeo4/00001.wav` (1 train, 2 dev, 3 test); `<root>/veri_test2.txt` (the cleaned
list) or `veri_test.txt`, lines `1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav`
(1: same speaker). Identification merges train and dev into "train", as SUPERB trains on both
and keeps test apart; the identification speakers are the classes, so test speakers are seen.
"""
from __future__ import annotations

import os
import re
from typing import List, NamedTuple, Optional, Tuple

import numpy as np

from fedexit_jax.data import corpus
from fedexit_jax.data.speech_commands import DataError
from fedexit_jax.data.utterances import Utterances

IDEN_SPLIT = "iden_split.txt"
TRIALS_FILES = ("veri_test2.txt", "veri_test.txt")  # the cleaned list first
IDEN_SPLITS = {"1": "train", "2": "train", "3": "test"}
MAX_SECONDS = 8.0  # longer utterances are cut: memory stays bounded, the speaker still heard
_REL = re.compile(r"^(id\d+)/[^/\s]+/[^/\s]+\.wav$")


class Trials(NamedTuple):
  idx_a: np.ndarray  # int32 [P], row of the first utterance in the verification Utterances
  idx_b: np.ndarray  # int32 [P]
  same: np.ndarray   # bool [P], True when both are the same speaker


def _speaker(root: str, rel: str, where: str) -> str:
  """'id10001/1zcIwhmdeo4/00001.wav' -> 'id10001', after checking the file is there."""
  m = _REL.match(rel)
  if not m:
    raise DataError(f"{where}: {rel!r} is not a VoxCeleb1 path (idXXXXX/<video>/<n>.wav)")
  if not os.path.isfile(os.path.join(root, "wav", rel)):
    raise DataError(f"{where}: {os.path.join(root, 'wav', rel)} does not exist")
  return m.group(1)


def scan_identification(root) -> Tuple[List[corpus.Row], Tuple[str, ...]]:
  """(rows, class names = the sorted speakers) of iden_split.txt; DataError names a bad line."""
  root = os.path.abspath(os.fspath(root))
  path = os.path.join(root, IDEN_SPLIT)
  entries = []
  for n, line in corpus.read_lines(path, "the VoxCeleb1 identification split"):
    parts = line.split()
    if len(parts) != 2 or parts[0] not in IDEN_SPLITS:
      raise DataError(f"{path}:{n}: expected '<1|2|3> idXXXXX/<video>/<n>.wav', got {line!r}")
    entries.append((parts[1], _speaker(root, parts[1], f"{path}:{n}"), IDEN_SPLITS[parts[0]]))
  if not entries:
    raise DataError(f"{path} lists no utterances")
  names = tuple(sorted({spk for _, spk, _ in entries}))
  index = {s: i for i, s in enumerate(names)}
  rows = [corpus.Row(f"wav/{rel}", index[spk], "", spk, split) for rel, spk, split in entries]
  return rows, names


def load_identification(root, max_seconds: float = MAX_SECONDS, skip_errors: bool = False,
                        progress: Optional[bool] = None, cache_dir: Optional[str] = None,
                        use_cache: bool = True) -> Utterances:
  """The identification split: labels index the sorted speaker ids, splits "train" (iden 1 and
  2) and "test" (iden 3), speakers the speaker id. skip_errors: unreadable audio is skipped and
  counted in num_skipped instead of raising AudioError naming the file."""
  root = os.path.abspath(os.fspath(root))
  rows, names = scan_identification(root)
  return corpus.build("voxceleb1_iden", root, rows, names, max_seconds, skip_errors, progress,
                      cache_dir, use_cache)


def trials_path(root, trials_file: Optional[str] = None) -> str:
  """trials_file (relative to root, or absolute), else veri_test2.txt, else veri_test.txt."""
  root = os.fspath(root)
  if trials_file is not None:
    return os.path.join(root, trials_file)
  for name in TRIALS_FILES:
    if os.path.isfile(os.path.join(root, name)):
      return os.path.join(root, name)
  raise DataError(f"{root} has neither {' nor '.join(TRIALS_FILES)}: no verification trials")


def load_verification(root, trials_file: Optional[str] = None, max_seconds: float = MAX_SECONDS,
                      skip_errors: bool = False, progress: Optional[bool] = None,
                      cache_dir: Optional[str] = None,
                      use_cache: bool = True) -> Tuple[Utterances, Trials]:
  """(every file the trials mention, once, sorted: splits "verify", labels -1; the trials as
  rows of it). With skip_errors, trials naming a skipped file are dropped."""
  root = os.path.abspath(os.fspath(root))
  path = trials_path(root, trials_file)
  pairs, speakers = [], {}
  for n, line in corpus.read_lines(path, "the VoxCeleb1 verification trials"):
    parts = line.split()
    if len(parts) != 3 or parts[0] not in ("0", "1"):
      raise DataError(f"{path}:{n}: expected '<0|1> <utterance> <utterance>', got {line!r}")
    for rel in parts[1:]:
      if rel not in speakers:
        speakers[rel] = _speaker(root, rel, f"{path}:{n}")
    pairs.append((parts[1], parts[2], parts[0] == "1"))
  if not pairs:
    raise DataError(f"{path} lists no trials")
  rows = [corpus.Row(f"wav/{rel}", -1, "", speakers[rel], "verify") for rel in sorted(speakers)]
  data = corpus.build(f"voxceleb1_{os.path.basename(path)[:-4]}", root, rows, (), max_seconds,
                      skip_errors, progress, cache_dir, use_cache)
  row_of = {f[len("wav/"):]: i for i, f in enumerate(data.files.tolist())}
  pairs = [p for p in pairs if p[0] in row_of and p[1] in row_of]
  return data, Trials(np.asarray([row_of[a] for a, _, _ in pairs], np.int32),
                      np.asarray([row_of[b] for _, b, _ in pairs], np.int32),
                      np.asarray([s for _, _, s in pairs], bool))
