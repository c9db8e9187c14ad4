"""IEMOCAP from a local folder: the SUPERB 4-class emotion task, as `Utterances`.

Layout: `<root>/Session{1..5}/sentences/wav/<dialog>/<utt_id>.wav` and
`<root>/Session{N}/dialog/EmoEvaluation/<dialog>.txt`, whose label lines read
`[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]` (every other line is
ignored). SUPERB keeps four classes, merging excited into happy as earlier emotion work did;
utterances of every other emotion are dropped, not errors. Each session
is one pair of actors, so leaving one session out tests on unseen speakers.
"""
from __future__ import annotations

import logging
import os
import re
from collections import Counter
from typing import Dict, List, Optional, Tuple

import numpy as np

from fedexit_jax.data import corpus
from fedexit_jax.data.speech_commands import DataError
from fedexit_jax.data.utterances import Utterances

log = logging.getLogger(__name__)

CLASS_NAMES = ("neutral", "happy", "angry", "sad")
MAPPING = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}
EMOTIONS = ("neu", "hap", "exc", "ang", "sad", "fru", "sur", "fea", "dis", "oth", "xxx")
SESSIONS = (1, 2, 3, 4, 5)
MAX_SECONDS = 15.0  # longer utterances are cut, to keep memory bounded
_LABEL_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(\S+)\s+(\S+)\s+\[")
_UTT = re.compile(r"^(Ses\d\d)[FM]_\S+_([FM])\d+$")


def speaker_of(utt_id: str) -> str:
  """'Ses01F_impro01_M003' -> 'Ses01M': the session and the gender of who speaks (the last part),
  not of who leads the dialog (the first part)."""
  m = _UTT.match(utt_id)
  if not m:
    raise DataError(f"{utt_id!r} is not an IEMOCAP utterance id (SesNN[FM]_<dialog>_[FM]NNN)")
  return m.group(1) + m.group(2)


def session_of(file: str) -> int:
  """'Session3/sentences/wav/...' -> 3."""
  return int(file.split("/")[0][len("Session"):])


def scan(root, test_session: int = 5, skip_errors: bool = False
         ) -> Tuple[List[corpus.Row], Dict[str, int], List[str]]:
  """(rows of the four classes, count of each dropped emotion code, utterances skipped for a
  missing wav). DataError names the file and line of an unknown code or malformed label line."""
  root = os.path.abspath(os.fspath(root))
  sessions = [s for s in SESSIONS if os.path.isdir(os.path.join(root, f"Session{s}"))]
  if not sessions:
    raise DataError(f"{root} holds no Session1..Session5 folders: not an IEMOCAP folder")
  if test_session not in sessions:
    raise DataError(f"test_session={test_session!r}, but {root} holds sessions {sessions}")
  index = {c: i for i, c in enumerate(CLASS_NAMES)}
  rows, dropped, missing = [], Counter(), []
  for s in sessions:
    edir = os.path.join(root, f"Session{s}", "dialog", "EmoEvaluation")
    if not os.path.isdir(edir):
      raise DataError(f"{edir} is missing: no emotion labels for session {s}")
    for name in sorted(os.listdir(edir)):
      path = os.path.join(edir, name)
      if name.startswith(".") or not name.endswith(".txt") or not os.path.isfile(path):
        continue
      dialog = name[:-len(".txt")]
      for n, line in corpus.read_lines(path, "IEMOCAP labels"):
        if not line.startswith("["):
          continue
        m = _LABEL_LINE.match(line)
        if not m:
          raise DataError(f"{path}:{n}: malformed label line {line!r}")
        utt, code = m.groups()
        if code not in EMOTIONS:
          raise DataError(f"{path}:{n}: unknown emotion code {code!r} (IEMOCAP's are {EMOTIONS})")
        if code not in MAPPING:
          dropped[code] += 1
          continue
        try:
          spk = speaker_of(utt)
        except DataError as e:
          raise DataError(f"{path}:{n}: {e}") from None
        rel = f"Session{s}/sentences/wav/{dialog}/{utt}.wav"
        if not os.path.isfile(os.path.join(root, rel)):
          if not skip_errors:
            raise DataError(f"{path}:{n}: utterance {utt} has no audio "
                            f"({os.path.join(root, rel)} does not exist)")
          missing.append(utt)
          continue
        rows.append(corpus.Row(rel, index[MAPPING[code]], "", spk,
                               "test" if s == test_session else "train"))
  if not rows:
    raise DataError(f"{root}: no utterance labelled {sorted(MAPPING)} (with audio)")
  if dropped:
    log.info("%s: dropped %d utterance(s) outside the 4 classes: %s", root,
             sum(dropped.values()), dict(sorted(dropped.items())))
  if missing:
    log.warning("%s: skipped %d labelled utterance(s) without audio, e.g. %s", root,
                len(missing), missing[0])
  return rows, dict(dropped), missing


def load(root, test_session: int = 5, max_seconds: float = MAX_SECONDS,
         skip_errors: bool = False, progress: Optional[bool] = None,
         cache_dir: Optional[str] = None, use_cache: bool = True) -> Utterances:
  """The 4-class corpus: splits "test" for `test_session`, "train" for the others. skip_errors:
  unreadable audio and labelled utterances without a wav are skipped and counted in
  num_skipped, instead of raising AudioError / DataError naming them."""
  root = os.path.abspath(os.fspath(root))
  rows, _, missing = scan(root, test_session, skip_errors)
  return corpus.build("iemocap", root, rows, CLASS_NAMES, max_seconds, skip_errors, progress,
                      cache_dir, use_cache, num_skipped=len(missing))


def folds(data: Utterances) -> List[Tuple[np.ndarray, np.ndarray]]:
  """Leave-one-session-out: (train_idx, test_idx) for sessions 1..5, by each file's session
  (whatever test_session the data was loaded with)."""
  sessions = np.asarray([session_of(f) for f in data.files.tolist()])
  out = []
  for s in SESSIONS:
    test = np.flatnonzero(sessions == s)
    if not len(test):
      raise DataError(f"no utterance of session {s}: its fold would test on nothing")
    out.append((np.flatnonzero(sessions != s), test))
  return out
