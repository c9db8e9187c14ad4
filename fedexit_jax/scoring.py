"""Host-side (numpy) scores of the speech tasks: speaker-verification EER, CTC greedy decoding,
and corpus-level word and character error rates.

These run once per evaluation on gathered outputs, not inside jit, so they favour exact,
checkable definitions over speed. Word and character alignment is jiwer's (rapidfuzz's
Levenshtein); `edit_distance` is a tiny independent DP that the tests cross-check it against.
"""
from __future__ import annotations

from typing import Sequence

import jiwer
import numpy as np


def eer(scores, same) -> tuple[float, float]:
  """Equal error rate of verification trials, and the threshold where it is reached.

  Convention (SUPERB / s3prl's, i.e. sklearn's ROC with linear interpolation): a trial is
  accepted when `score >= threshold`; tied scores form one ROC point. The ROC runs from
  "accept nothing" (FAR 0, FRR 1) through one point per distinct score, highest first; the EER
  is where the straight segments between these points cross FAR = FRR (exact, no root finder).
  The threshold is interpolated between the two points' scores the same way ("accept nothing"
  counts as the top score). A perfect system gives 0.0, a fully inverted one 1.0.

  Args:
    scores: [P] floats, higher = more likely the same speaker.
    same: [P] bools (or 0/1), True for target (same-speaker) trials.
  """
  scores = np.asarray(scores, dtype=np.float64)
  same = np.asarray(same)
  if scores.ndim != 1 or same.shape != scores.shape:
    raise ValueError(f"eer: scores and same must be 1-D of one length, got shapes "
                     f"{scores.shape} and {same.shape}")
  if same.dtype != bool:
    if not np.isin(same, (0, 1)).all():
      raise ValueError("eer: `same` must be bools or 0/1")
    same = same.astype(bool)
  if not np.isfinite(scores).all():
    raise ValueError(f"eer: {int((~np.isfinite(scores)).sum())} of {scores.size} scores are "
                     "not finite (NaN or inf)")
  n_pos, n_neg = int(same.sum()), int((~same).sum())
  if n_pos == 0 or n_neg == 0:
    raise ValueError(f"eer needs at least one target and one non-target trial, got {n_pos} "
                     f"target and {n_neg} non-target")

  order = np.argsort(-scores, kind="stable")
  s, y = scores[order], same[order]
  last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # last trial of each tied group
  tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
  far = np.r_[0.0, fp / n_neg]
  frr = np.r_[1.0, (n_pos - tp) / n_pos]
  thr = np.r_[s[0], s[last]]
  gap = far - frr  # -1 at the start, +1 at the end, never decreasing
  i = int(np.argmax(gap >= 0))  # >= 1
  if gap[i] == 0:  # a ROC point lies on FAR = FRR (equal fractions divide to equal floats)
    return float(far[i]), float(thr[i])
  a = -gap[i - 1] / (gap[i] - gap[i - 1])
  return (float(far[i - 1] + a * (far[i] - far[i - 1])),
          float(thr[i - 1] + a * (thr[i] - thr[i - 1])))


def cosine_scores(emb, idx_a, idx_b) -> np.ndarray:
  """[P] cosine similarity of rows `emb[idx_a[p]]` and `emb[idx_b[p]]` (float64).

  Rows are normalised once, with the norm floored at 1e-12, so a zero embedding scores 0
  against everything instead of NaN.
  """
  emb = np.asarray(emb, dtype=np.float64)
  if emb.ndim != 2:
    raise ValueError(f"cosine_scores: emb must be [N, D], got shape {emb.shape}")
  unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
  return np.einsum("pd,pd->p", unit[np.asarray(idx_a)], unit[np.asarray(idx_b)])


def ctc_greedy_decode(logits_or_ids, frame_mask, blank: int = 0) -> list[list[int]]:
  """Best path per utterance: argmax per frame, keep valid frames, collapse repeats, drop blanks.

  Args:
    logits_or_ids: [B, T, V] float logits (argmax taken here) or [B, T] int frame ids.
    frame_mask: [B, T] bool, True for real frames. Masked frames are removed before collapsing,
      so they neither emit nor separate repeats (for right padding this is the same as cutting).
    blank: the blank id (optax.ctc_loss's default blank_id is 0 too).
  """
  x = np.asarray(logits_or_ids)
  if x.ndim == 3 and np.issubdtype(x.dtype, np.floating):
    ids = x.argmax(-1)
  elif x.ndim == 2 and np.issubdtype(x.dtype, np.integer):
    ids = x
  else:
    raise ValueError(f"ctc_greedy_decode wants [B, T, V] float logits or [B, T] int ids, got "
                     f"{x.dtype} of shape {x.shape}")
  mask = np.asarray(frame_mask, dtype=bool)
  if mask.shape != ids.shape:
    raise ValueError(f"ctc_greedy_decode: frame_mask shape {mask.shape} != {ids.shape}")
  out = []
  for row, m in zip(ids, mask):
    seq = row[m]
    seq = seq[np.r_[True, seq[1:] != seq[:-1]]] if seq.size else seq
    out.append([int(t) for t in seq if t != blank])
  return out


def edit_distance(a: Sequence, b: Sequence) -> int:
  """Levenshtein distance (unit-cost insert, delete, substitute) between two sequences."""
  row = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    diag, row[0] = row[0], i
    for j, y in enumerate(b, 1):
      diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diag + (x != y))
  return row[-1]


def _normalise(texts: str | Sequence[str], what: str) -> list[str]:
  """Whitespace runs -> one space, ends stripped, so both rates see the same text."""
  texts = [texts] if isinstance(texts, str) else list(texts)
  if not all(isinstance(t, str) for t in texts):
    raise ValueError(f"{what} must be strings")
  return [" ".join(t.split()) for t in texts]


def _rate(refs, hyps, process, unit: str) -> float:
  refs, hyps = _normalise(refs, "references"), _normalise(hyps, "hypotheses")
  if len(refs) != len(hyps):
    raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
  n_ref = sum(len(r.split()) if unit == "words" else len(r) for r in refs)
  if n_ref == 0:
    # jiwer would return the raw insertion count here, which is not a rate.
    raise ValueError(f"error rate undefined: the references hold no {unit}")
  out = process(refs, hyps)
  return (out.substitutions + out.deletions + out.insertions) / n_ref


def wer(refs: str | Sequence[str], hyps: str | Sequence[str]) -> float:
  """Corpus word error rate: total word edits / total reference words (words split on spaces).

  An empty hypothesis counts every reference word as deleted; an empty reference counts every
  hypothesis word as inserted, against the other references' words. If no reference has any
  word the rate is undefined: ValueError.
  """
  return _rate(refs, hyps, jiwer.process_words, "words")


def cer(refs: str | Sequence[str], hyps: str | Sequence[str]) -> float:
  """Corpus character error rate: total character edits / total reference characters.

  Spaces between words are characters; whitespace runs count as one space and ends are
  stripped. Empty references and hypotheses are handled as in `wer`.
  """
  return _rate(refs, hyps, jiwer.process_characters, "characters")
