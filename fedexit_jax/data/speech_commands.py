"""Speech Commands (v0.02 or v0.01) from a local folder (real, or written by `synth`) as numpy
arrays, and the separate 12-class test archive of the SUPERB protocol (`load_test_archive`).

Layout: `<word>/<speaker>_nohash_<n>.wav`, `validation_list.txt`, `testing_list.txt` (paths
relative to the root; every other file is train), `_background_noise_/*.wav`. Speakers come from
the file names, so the official splits are already by speaker.

Label sets, as in SUPERB and the paper:
- "12": the ten keywords, `_silence_` (1 s windows cut from the background-noise files) and
  `_unknown_` (every other word);
- "35": the 35 words, no silence, no unknown.
Silence windows have no speaker (''); each split cuts them from its own stretch of every noise
file (train the first 80 %, validation the next 10 %, test the last 10 %) so splits never share
audio.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from fedexit_jax.data import audio, utterances

log = logging.getLogger(__name__)

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
OTHER_WORDS = ("bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin",
               "nine", "one", "seven", "sheila", "six", "three", "tree", "two", "wow", "zero",
               "backward", "forward", "follow", "learn", "visual")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
LABELS_12 = KEYWORDS + (SILENCE, UNKNOWN)
LABELS_35 = tuple(sorted(KEYWORDS + OTHER_WORDS))
BACKGROUND_DIR = "_background_noise_"
SPLITS = ("train", "validation", "test")
_SILENCE_SEGMENTS = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}
_CACHE_VERSION = 1


class DataError(ValueError):
  """A corpus that cannot feed a run: no utterances, bad file names, too few speakers..."""


class KeywordData(NamedTuple):
  waveforms: np.ndarray    # float32 [N, S], normalised over the real samples, zero-padded
  lengths: np.ndarray      # int32 [N], real samples per row
  labels: np.ndarray       # int32 [N], index into class_names
  speakers: np.ndarray     # str [N]; '' for _silence_ windows
  splits: np.ndarray       # str [N] in SPLITS
  files: np.ndarray        # str [N], relative path ('_background_noise_/x.wav#offset' for silence)
  class_names: Tuple[str, ...]
  num_skipped: int         # unreadable files skipped (skip_errors=True)


def class_names(label_set: str) -> Tuple[str, ...]:
  if label_set == "12":
    return LABELS_12
  if label_set == "35":
    return LABELS_35
  raise ValueError(f"label_set must be '12' or '35', got {label_set!r}")


def speaker_of(filename: str) -> str:
  """'0a7c2a8d_nohash_1.wav' -> '0a7c2a8d' (the Speech Commands naming)."""
  base = os.path.basename(filename)
  if "_nohash_" not in base:
    raise DataError(f"{filename}: not a Speech Commands file name (<speaker>_nohash_<n>.wav)")
  return base.split("_nohash_")[0]


def _read_list(root: str, name: str) -> set:
  path = os.path.join(root, name)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} is missing: not a Speech Commands v0.02 folder")
  with open(path, encoding="utf-8") as f:
    return {line.strip().replace("\\", "/") for line in f if line.strip()}


def scan(root) -> List[Tuple[str, str, str, str]]:
  """(relative path, word, speaker, split) for every utterance file, sorted by path."""
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise FileNotFoundError(f"Speech Commands folder {root} does not exist")
  val, test = _read_list(root, "validation_list.txt"), _read_list(root, "testing_list.txt")
  rows = []
  for word in sorted(os.listdir(root)):
    wdir = os.path.join(root, word)
    if word.startswith((".", "_")) or not os.path.isdir(wdir):
      continue
    for name in sorted(os.listdir(wdir)):
      if not name.endswith(".wav"):
        continue
      rel = f"{word}/{name}"
      split = "test" if rel in test else "validation" if rel in val else "train"
      rows.append((rel, word, speaker_of(name), split))
  if not rows:
    raise DataError(f"{root} holds no <word>/*.wav files (only the lists?): not a Speech "
                    "Commands v0.02 folder")
  return rows


def _fingerprint(root: str, rows) -> str:
  h = hashlib.sha1()
  names = [r[0] for r in rows] + ["validation_list.txt", "testing_list.txt"]
  bdir = os.path.join(root, BACKGROUND_DIR)
  if os.path.isdir(bdir):
    names += [f"{BACKGROUND_DIR}/{n}" for n in sorted(os.listdir(bdir))]
  for rel in names:
    st = os.stat(os.path.join(root, rel))
    h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  return h.hexdigest()


def _silence_windows(root: str, counts: Dict[str, int], num_samples: int, seed: int,
                     resample: bool):
  """Random 1 s windows of the background-noise files, each split from its own stretch."""
  bdir = os.path.join(root, BACKGROUND_DIR)
  names = sorted(n for n in os.listdir(bdir) if n.endswith(".wav")) if os.path.isdir(bdir) else []
  if not names:
    raise FileNotFoundError(f"{bdir} has no .wav files: cannot make {SILENCE} examples "
                            "(use label_set='35' or silence_fraction=0)")
  noises = [audio.load(os.path.join(bdir, n), expected_sr=None if resample else audio.SAMPLE_RATE)
            for n in names]
  rng = np.random.default_rng([seed, 0x511])
  out = []
  for split in SPLITS:
    lo, hi = _SILENCE_SEGMENTS[split]
    for _ in range(counts.get(split, 0)):
      k = int(rng.integers(len(names)))
      x = noises[k]
      start, stop = int(lo * len(x)), int(hi * len(x))
      offset = start + int(rng.integers(max(stop - start - num_samples, 0) + 1))
      clip, mask = audio.crop_or_pad(x[:max(stop, offset + 1)], num_samples, offset)
      out.append((audio.normalize(clip, int(mask.sum())), int(mask.sum()),
                  f"{BACKGROUND_DIR}/{names[k]}#{offset}", split))
  return out


def _decode(root: str, rels: Sequence[str], num_samples: int, skip_errors: bool,
            resample: bool, progress: Optional[bool] = None):
  """Decodes root/rel for every rel: (waveforms, real lengths, indices of the decoded rels,
  number skipped). An unreadable file raises AudioError naming it, or with `skip_errors` is
  skipped, counted and logged."""
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  waves, lengths, kept, skipped = [], [], [], []
  expected = None if resample else audio.SAMPLE_RATE
  disable = None if progress is None else not progress  # None: on when writing to a terminal
  for i, rel in enumerate(tqdm(rels, desc="decoding", unit="file", disable=disable)):
    try:
      x, mask = audio.load_clip(os.path.join(root, rel), num_samples, expected_sr=expected)
    except audio.AudioError as e:
      if not skip_errors:
        raise
      skipped.append(str(e))
      continue
    waves.append(x)
    lengths.append(int(mask.sum()))
    kept.append(i)
  if skipped:
    log.warning("%s: skipped %d unreadable file(s), e.g. %s", root, len(skipped), skipped[0])
  return waves, lengths, kept, len(skipped)


def load_folder(root, label_set: str = "12", num_samples: int = audio.SAMPLE_RATE,
                cache_dir: Optional[str] = None, use_cache: bool = True,
                skip_errors: bool = False, silence_fraction: float = 0.1, seed: int = 0,
                resample: bool = True, progress: Optional[bool] = None) -> KeywordData:
  """Decodes a Speech Commands folder into arrays (see KeywordData), cached as one .npz.

  silence_fraction: (12 classes) _silence_ windows added to each split, as a fraction of that
    split's utterances (8 % in the official v0.02 test set).
  skip_errors: unreadable files are skipped, counted in `num_skipped` and logged; otherwise the
    first one raises AudioError naming the file.
  resample: False rejects files not stored at 16 kHz instead of resampling them.
  cache_dir: default `<root>/.fedexit_cache`; the key covers the arguments and every file's
    size and mtime, so an edited folder is decoded again.
  """
  root = os.path.abspath(os.fspath(root))
  names = class_names(label_set)
  rows = scan(root)
  key_src = dict(version=_CACHE_VERSION, root=root, label_set=label_set, num_samples=num_samples,
                 skip_errors=skip_errors, silence_fraction=silence_fraction, seed=seed,
                 resample=resample, files=_fingerprint(root, rows))
  key = hashlib.sha1(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:16]
  cache_dir = os.path.join(root, ".fedexit_cache") if cache_dir is None else os.fspath(cache_dir)
  cache_file = os.path.join(cache_dir, f"speech_commands_{label_set}_{key}.npz")
  if use_cache and os.path.isfile(cache_file):
    with np.load(cache_file, allow_pickle=False) as z:
      return KeywordData(z["waveforms"], z["lengths"], z["labels"], z["speakers"], z["splits"],
                         z["files"], tuple(str(c) for c in z["class_names"]),
                         int(z["num_skipped"]))

  index = {c: i for i, c in enumerate(names)}
  wanted = []
  for rel, word, spk, split in rows:
    if word in index and word not in (SILENCE, UNKNOWN):
      wanted.append((rel, index[word], spk, split))
    elif label_set == "12":
      wanted.append((rel, index[UNKNOWN], spk, split))
  if len(wanted) < len(rows):
    log.info("%s: %d files in folders outside the %s-class set ignored", root,
             len(rows) - len(wanted), label_set)

  waves, lengths, kept, num_skipped = _decode(root, [r[0] for r in wanted], num_samples,
                                              skip_errors, resample, progress)
  keep = [wanted[i] for i in kept]

  files = [r[0] for r in keep]
  labels = [r[1] for r in keep]
  speakers = [r[2] for r in keep]
  splits = [r[3] for r in keep]
  if label_set == "12" and silence_fraction > 0:
    counts = {s: int(round(silence_fraction * splits.count(s))) for s in SPLITS}
    for x, n, name, split in _silence_windows(root, counts, num_samples, seed, resample):
      waves.append(x)
      lengths.append(n)
      files.append(name)
      labels.append(index[SILENCE])
      speakers.append("")
      splits.append(split)

  data = KeywordData(
      waveforms=np.stack(waves).astype(np.float32) if waves else np.zeros((0, num_samples),
                                                                           np.float32),
      lengths=np.asarray(lengths, np.int32), labels=np.asarray(labels, np.int32),
      speakers=np.asarray(speakers, dtype=str), splits=np.asarray(splits, dtype=str),
      files=np.asarray(files, dtype=str), class_names=names, num_skipped=num_skipped)
  if use_cache:
    utterances.save_cache(cache_file, data)
  return data


def select(data: KeywordData, split: str) -> KeywordData:
  """The rows of one split (a KeywordData again)."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  return take(data, np.flatnonzero(data.splits == split))


def take(data: KeywordData, idx: Sequence[int]) -> KeywordData:
  idx = np.asarray(idx, np.int64)
  return data._replace(**{k: getattr(data, k)[idx] for k in
                          ("waveforms", "lengths", "labels", "speakers", "splits", "files")})


def load_test_archive(root, num_samples: int = audio.SAMPLE_RATE, skip_errors: bool = False,
                      resample: bool = True) -> KeywordData:
  """The separate, balanced 12-class test archive (`speech_commands_test_set_v0.01`, the SUPERB
  keyword-spotting test set; v0.02 has one too) as a test split.

  Layout: `<label>/<file>.wav` with one folder per class of the 12-class set, `_silence_` and
  `_unknown_` included (the archive ships its silence and unknown clips, so none are cut or
  relabelled here). Speakers come from `<speaker>_nohash_<n>` names ('' otherwise).
  """
  root = os.path.abspath(os.fspath(root))
  if not os.path.isdir(root):
    raise FileNotFoundError(f"Speech Commands test archive folder {root} does not exist")
  index = {c: i for i, c in enumerate(LABELS_12)}
  folders = sorted(d for d in os.listdir(root)
                   if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
  unknown = [d for d in folders if d not in index]
  if unknown:
    raise DataError(f"{root}: folders {unknown} are not labels of the 12-class test set "
                     f"{LABELS_12}; is this the speech_commands_test_set archive?")
  rels = [f"{label}/{name}" for label in folders
          for name in sorted(os.listdir(os.path.join(root, label))) if name.endswith(".wav")]
  waves, lengths, kept, num_skipped = _decode(root, rels, num_samples, skip_errors, resample)
  if not waves:
    raise DataError(f"{root} holds no readable <label>/*.wav files")
  files = [rels[i] for i in kept]
  labels = [index[f.split("/")[0]] for f in files]
  speakers = [speaker_of(f) if "_nohash_" in f else "" for f in files]
  n = len(waves)
  return KeywordData(np.stack(waves).astype(np.float32), np.asarray(lengths, np.int32),
                     np.asarray(labels, np.int32), np.asarray(speakers, dtype=str),
                     np.full(n, "test"), np.asarray(files, dtype=str), LABELS_12, num_skipped)
