"""LibriSpeech from a local folder, for ASR, as `Utterances` with transcripts; and the character
vocabulary a CTC head predicts.

Layout: `<root>/<split>/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac` beside
`<spk>-<chapter>.trans.txt` (lines `<spk>-<chapter>-<nnnn> TRANSCRIPT IN CAPS`). root may also be
one split folder itself (`.../LibriSpeech/dev-clean`), loaded when `splits` names it. Every flac
must have exactly one transcript line and every line a flac: a mismatch means a broken download,
and training on it would be silently wrong.
"""
from __future__ import annotations

import os
import re
import string
from typing import List, Optional, Sequence

import numpy as np

from fedexit_jax.data import corpus
from fedexit_jax.data.speech_commands import DataError
from fedexit_jax.data.utterances import Utterances

BLANK = "<blank>"
VOCAB = (BLANK, " ", "'") + tuple(string.ascii_lowercase)  # 0 is the CTC blank; 29 symbols
_ID = {c: i for i, c in enumerate(VOCAB) if i}
MAX_SECONDS = 20.0  # longer utterances are cut (their transcripts are not), to bound memory
_NOT_KEPT = re.compile(r"[^a-z' ]")


def normalize_text(text: str) -> str:
  """Lowercase letters, apostrophes and single spaces: the vocabulary's characters. Anything else
  (none in LibriSpeech's own transcripts) becomes a space, so 'what-to' stays two words."""
  return " ".join(_NOT_KEPT.sub(" ", text.lower()).split())


def text_to_ids(text: str) -> np.ndarray:
  """Characters -> int32 ids in VOCAB (never 0, the blank); ValueError names an unknown one."""
  for pos, c in enumerate(text):
    if c not in _ID:
      raise ValueError(f"character {c!r} at position {pos} of {text!r} is not in the vocabulary "
                       "(space, apostrophe, a-z; see normalize_text)")
  return np.asarray([_ID[c] for c in text], np.int32)


def ids_to_text(ids) -> str:
  """int ids -> characters; blanks (0) are dropped, repeats kept (CTC collapsing is the
  decoder's job). ValueError on an id outside the vocabulary."""
  out = []
  for i in np.asarray(ids).reshape(-1).tolist():
    if not 0 <= i < len(VOCAB):
      raise ValueError(f"id {i} is outside the vocabulary (0..{len(VOCAB) - 1})")
    if i:
      out.append(VOCAB[i])
  return "".join(out)


def _is_split_folder(path: str) -> bool:
  """Holds `<spk>` folders (digits) rather than split folders."""
  return any(d.isdigit() and os.path.isdir(os.path.join(path, d)) for d in os.listdir(path))


def _split_dir(root: str, split: str) -> str:
  path = os.path.join(root, split)
  if os.path.isdir(path):
    return path
  if os.path.basename(root) == split and _is_split_folder(root):
    return root
  if _is_split_folder(root):
    raise DataError(f"{root} is itself a LibriSpeech split folder "
                    f"({os.path.basename(root)!r}); pass splits=({os.path.basename(root)!r},)")
  raise DataError(f"{path} is missing: no LibriSpeech split {split!r}")


def _chapter_rows(root: str, cdir: str, spk: str, chapter: str, split: str) -> List[corpus.Row]:
  flacs = {n[:-len(".flac")] for n in os.listdir(cdir) if n.endswith(".flac")}
  trans = os.path.join(cdir, f"{spk}-{chapter}.trans.txt")
  if not os.path.isfile(trans):
    if flacs:
      raise DataError(f"{cdir} holds {len(flacs)} .flac file(s) but no {os.path.basename(trans)}")
    return []
  texts = {}
  for n, line in corpus.read_lines(trans, "LibriSpeech transcripts"):
    utt, _, text = line.partition(" ")
    if not re.fullmatch(rf"{re.escape(spk)}-{re.escape(chapter)}-\d+", utt) or utt in texts:
      raise DataError(f"{trans}:{n}: expected a new '{spk}-{chapter}-<n> TRANSCRIPT', got {line!r}")
    if utt not in flacs:
      raise DataError(f"{trans}:{n}: {os.path.join(cdir, utt + '.flac')} does not exist")
    texts[utt] = normalize_text(text)
  orphans = sorted(flacs - set(texts))
  if orphans:
    raise DataError(f"{os.path.join(cdir, orphans[0] + '.flac')} has no line in {trans}"
                    + (f" ({len(orphans) - 1} more such file(s))" if len(orphans) > 1 else ""))
  prefix = os.path.relpath(cdir, root).replace(os.sep, "/")
  return [corpus.Row(f"{prefix}/{utt}.flac", -1, texts[utt], spk, split) for utt in sorted(texts)]


def scan(root, splits: Sequence[str] = ("train-clean-100",)) -> List[corpus.Row]:
  """The rows of every split, checked against the transcripts (DataError names what is wrong)."""
  root = os.path.abspath(os.fspath(root))
  if isinstance(splits, str):
    splits = (splits,)
  if not os.path.isdir(root):
    raise DataError(f"LibriSpeech folder {root} does not exist")
  rows = []
  for split in splits:
    sdir = _split_dir(root, split)
    before = len(rows)
    for spk in sorted(d for d in os.listdir(sdir) if d.isdigit()):
      for chapter in sorted(os.listdir(os.path.join(sdir, spk))):
        cdir = os.path.join(sdir, spk, chapter)
        if chapter.isdigit() and os.path.isdir(cdir):
          rows += _chapter_rows(root, cdir, spk, chapter, split)
    if len(rows) == before:
      raise DataError(f"{sdir} holds no <spk>/<chapter>/*.flac utterances")
  return rows


def load(root, splits: Sequence[str] = ("train-clean-100",), max_seconds: float = MAX_SECONDS,
         skip_errors: bool = False, progress: Optional[bool] = None,
         cache_dir: Optional[str] = None, use_cache: bool = True) -> Utterances:
  """texts: normalised transcripts (normalize_text); labels -1; speakers the speaker id; splits
  the split folder's name. skip_errors: unreadable audio is skipped and counted in num_skipped
  instead of raising AudioError naming the file."""
  root = os.path.abspath(os.fspath(root))
  rows = scan(root, splits)
  return corpus.build("librispeech", root, rows, (), max_seconds, skip_errors, progress,
                      cache_dir, use_cache)
