"""Scores against hand-derived numbers, and against independent references: sklearn's ROC for the
EER, a plain edit-distance DP for jiwer, and brute-force path enumeration for optax.ctc_loss
(whose CTC collapse rule must be the one `ctc_greedy_decode` applies)."""
import itertools

import jax
import numpy as np
import optax
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import roc_curve

from fedexit_jax import scoring


# --- EER -----------------------------------------------------------------------------------------

def test_eer_perfect_and_inverted():
  scores, same = [0.9, 0.8, 0.3, 0.1], [True, True, False, False]
  assert scoring.eer(scores, same) == pytest.approx((0.0, 0.8), abs=1e-12)  # accept >= 0.8: no error
  e, thr = scoring.eer(scores, [False, False, True, True])
  assert e == pytest.approx(1.0, abs=1e-12) and thr == pytest.approx(0.8, abs=1e-12)  # every non-target outranks every target


def test_eer_hand_computed_with_overlap():
  # Targets 0.9, 0.6, 0.3; non-targets 0.8, 0.6 (a tie). ROC points (FAR, FRR), accept >= t:
  #   nothing (0, 1); t=0.9 (0, 2/3); t=0.8 (1/2, 2/3); t=0.6 (1, 1/3); t=0.3 (1, 0).
  # FAR - FRR goes -1/6 -> +2/3 between t=0.8 and t=0.6: a = (1/6) / (5/6) = 1/5 of the way.
  # FAR = 1/2 + (1/5)(1/2) = 0.6, FRR = 2/3 - (1/5)(1/3) = 0.6; threshold 0.8 - (1/5)(0.2) = 0.76.
  e, thr = scoring.eer([0.9, 0.8, 0.6, 0.6, 0.3], [1, 0, 1, 0, 1])
  assert e == pytest.approx(0.6, abs=1e-12) and thr == pytest.approx(0.76, abs=1e-12)


def test_eer_exact_roc_point():
  # Targets 0.9, 0.7, 0.4; non-targets 0.8, 0.3, 0.2: at t=0.7, FAR = 1/3 (0.8) and FRR = 1/3 (0.4).
  assert scoring.eer([0.9, 0.8, 0.7, 0.4, 0.3, 0.2], [1, 0, 1, 1, 0, 0]) == pytest.approx((1 / 3, 0.7), abs=1e-12)


def _sklearn_eer(scores, same):
  """SUPERB's (s3prl) recipe: the root of 1 - x - TPR(x) on the linearly interpolated ROC."""
  fpr, tpr, _ = roc_curve(same, scores)
  return brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0, xtol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_eer_matches_sklearn_roc(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(20, 300))
  same = rng.random(n) < 0.3
  same[:2] = [True, False]
  scores = rng.normal(size=n) + 1.5 * same
  if seed == 4:
    scores = np.round(scores, 1)  # many ties: diagonal ROC segments
  e, thr = scoring.eer(scores, same)
  assert e == pytest.approx(_sklearn_eer(scores, same), abs=1e-6)
  # The threshold lies between two adjacent scores whose counted rates bracket the EER.
  def rates(t):  # (FAR, FRR) accepting score >= t
    return np.mean(scores[~same] >= t), np.mean(scores[same] < t)
  far_hi, frr_hi = rates(scores[scores >= thr].min())
  far_lo, frr_lo = rates(scores[scores <= thr].max())
  tol = 1e-12
  assert far_hi - tol <= e <= frr_hi + tol and frr_lo - tol <= e <= far_lo + tol


@pytest.mark.parametrize("scores, same, message", [
    ([0.1, 0.2], [True, True], "at least one target and one non-target"),
    ([0.1, 0.2], [False, False], "at least one target and one non-target"),
    ([0.1, np.nan], [True, False], "not finite"),
    ([0.1, np.inf], [True, False], "not finite"),
    ([0.1, 0.2], [True], "1-D of one length"),
    ([0.1, 0.2], [2, 0], "bools or 0/1"),
])
def test_eer_rejects_bad_trials(scores, same, message):
  with pytest.raises(ValueError, match=message):
    scoring.eer(scores, same)


def test_cosine_scores_and_zero_vector():
  emb = np.array([[3.0, 4.0], [4.0, 3.0], [0.0, 0.0], [-6.0, -8.0]])
  got = scoring.cosine_scores(emb, [0, 0, 2, 0], [1, 3, 1, 0])
  np.testing.assert_allclose(got, [24 / 25, -1.0, 0.0, 1.0], atol=1e-12)


# --- CTC greedy decoding -------------------------------------------------------------------------

def test_ctc_greedy_decode_ids():
  ids = np.array([[1, 1, 0, 1, 2, 2, 0, 0, 3],
                  [2, 2, 2, 0, 0, 0, 0, 0, 0],
                  [1, 0, 1, 1, 3, 3, 3, 3, 3]])
  mask = np.ones_like(ids, bool)
  mask[2, 2] = False  # 1 0 _ 1 : the blank still separates the two 1s
  mask[2, 4:] = False  # trailing padding that would emit 3
  assert scoring.ctc_greedy_decode(ids, mask) == [[1, 1, 2, 3], [2], [1, 1]]


def test_ctc_greedy_decode_masked_frame_does_not_separate_repeats():
  ids = np.array([[1, 0, 1], [1, 2, 1]])
  mask = np.array([[True, False, True], [True, False, True]])
  assert scoring.ctc_greedy_decode(ids, mask) == [[1], [1]]


def test_ctc_greedy_decode_logits_and_blank_id():
  ids = np.array([[3, 3, 1, 0, 0, 2]])
  logits = np.eye(4, dtype=np.float32)[ids] * 5.0 - 1.0
  mask = np.array([[True] * 5 + [False]])
  assert scoring.ctc_greedy_decode(logits, mask) == [[3, 1]]
  assert scoring.ctc_greedy_decode(logits, mask, blank=3) == [[1, 0]]
  assert scoring.ctc_greedy_decode(logits, np.zeros((1, 6), bool)) == [[]]


def test_ctc_greedy_decode_rejects_float_ids():
  with pytest.raises(ValueError, match="int ids"):
    scoring.ctc_greedy_decode(np.zeros((2, 3)), np.ones((2, 3), bool))


# --- WER / CER -----------------------------------------------------------------------------------

def test_wer_cer_hand_cases():
  assert scoring.wer("the cat sat", "the cat sat down") == pytest.approx(1 / 3)  # 1 insertion
  assert scoring.cer("abc", "abd") == pytest.approx(1 / 3)
  assert scoring.wer(["the cat sat"], [""]) == 1.0  # 3 deletions / 3 words
  assert scoring.cer(["ab"], [""]) == 1.0
  # Corpus level, not a mean of rates: (1 sub + 0) / (2 + 4) words.
  assert scoring.wer(["a b", "c d e f"], ["a x", "c d e f"]) == pytest.approx(1 / 6)
  # An empty reference adds its hypothesis as insertions: (0 + 2) / 2.
  assert scoring.wer(["", "a b"], ["x y", "a b"]) == 1.0
  # CER counts one space between words, whatever the whitespace: "a b" -> "ab" is 1 / 3.
  assert scoring.cer([" a \t b  "], ["ab"]) == pytest.approx(1 / 3)


def test_wer_rejects_undefined_and_mismatched():
  with pytest.raises(ValueError, match="no words"):
    scoring.wer(["", " "], ["", "x"])
  with pytest.raises(ValueError, match="no characters"):
    scoring.cer([], [])
  with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
    scoring.wer(["a", "b"], ["a"])


def test_edit_distance_hand_cases():
  assert scoring.edit_distance("kitten", "sitting") == 3
  assert scoring.edit_distance("", "abc") == 3 and scoring.edit_distance("abc", "") == 3
  assert scoring.edit_distance(["a", "b"], ["b", "a"]) == 2


def test_wer_cer_match_edit_distance_on_random_text():
  rng = np.random.default_rng(0)
  words = ["a", "b", "ab", "ba", "c"]
  def sentence():
    return " ".join(rng.choice(words, size=int(rng.integers(0, 7))))
  refs = [sentence() for _ in range(40)]
  hyps = [sentence() for _ in range(40)]
  refs[0] = "a b c"  # at least one word
  want_w = (sum(scoring.edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps))
            / sum(len(r.split()) for r in refs))
  want_c = sum(scoring.edit_distance(r, h) for r, h in zip(refs, hyps)) / sum(map(len, refs))
  assert scoring.wer(refs, hyps) == pytest.approx(want_w, rel=1e-12)
  assert scoring.cer(refs, hyps) == pytest.approx(want_c, rel=1e-12)


# --- optax.ctc_loss against brute force ----------------------------------------------------------

V, T = 3, 4  # blank (optax's default blank_id = 0) + two symbols; 81 frame paths
LABELS = [[1], [2], [1, 2], [1, 1], [2, 2], [2, 1]]


def _brute_force_nll(logits, labels):
  """-log of the total probability of every frame path that collapses to `labels`."""
  probs = np.exp(logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True))
  paths = np.array(list(itertools.product(range(V), repeat=len(logits))))
  decoded = scoring.ctc_greedy_decode(paths, np.ones(paths.shape, bool))
  p_path = probs[np.arange(len(logits)), paths].prod(-1)
  return -np.log(sum(p for p, d in zip(p_path, decoded) if d == labels))


def test_optax_ctc_loss_matches_brute_force():
  rng = np.random.default_rng(0)
  rows = []  # (logits, n_frames, labels)
  for n_frames in (T, T - 1):  # T - 1: the last frame is padding
    for labels in LABELS:
      rows.append((rng.normal(size=(T, V)).astype(np.float64), n_frames, labels))
  logits = np.stack([r[0] for r in rows]).astype(np.float32)
  logit_paddings = np.array([[float(t >= r[1]) for t in range(T)] for r in rows], np.float32)
  labels = np.array([r[2] + [0] * (2 - len(r[2])) for r in rows], np.int32)  # right padded
  label_paddings = np.array([[0.0] * len(r[2]) + [1.0] * (2 - len(r[2])) for r in rows],
                            np.float32)
  got = np.asarray(jax.jit(optax.ctc_loss)(logits, logit_paddings, labels, label_paddings))
  want = [_brute_force_nll(logits[i, :n].astype(np.float64), lab)
          for i, (_, n, lab) in enumerate(rows)]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
