"""The IEMOCAP loader on a tiny folder the test writes in the real layout (Session{N}/sentences/
wav/<dialog>/<utt>.wav, Session{N}/dialog/EmoEvaluation/<dialog>.txt)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from fedexit_jax.data import audio
from fedexit_jax.data import iemocap as ie
from fedexit_jax.data.speech_commands import DataError

SR = 16000
# per session: (utterance suffix, code, seconds); the dialog is Ses0{s}F_impro01
UTTS = [("F000", "neu", 0.5), ("M000", "exc", 1.0), ("F001", "ang", 1.5), ("M001", "sad", 0.25),
        ("F002", "fru", 0.5)]
# session 1 also has a scripted dialog led by the male actor
SCRIPT = ("Ses01M_script01_1", [("F000", "xxx", 0.5), ("M003", "hap", 3.0)])
HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def _block(utt, code, t0):
  """One turn as EmoEvaluation writes it: the label line, then the evaluators' lines."""
  return (f"[{t0:.4f} - {t0 + 1.9456:.4f}]\t{utt}\t{code}\t[2.5000, 2.5000, 2.5000]\n"
          "C-E2:\tNeutral;\t()\nC-E3:\tAnger;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n\n")


def write_dialog(root, session, dialog, utts, wavs=True):
  edir = os.path.join(root, f"Session{session}", "dialog", "EmoEvaluation")
  wdir = os.path.join(root, f"Session{session}", "sentences", "wav", dialog)
  os.makedirs(edir, exist_ok=True)
  os.makedirs(wdir, exist_ok=True)
  with open(os.path.join(edir, f"{dialog}.txt"), "w") as f:
    f.write(HEADER + "".join(_block(f"{dialog}_{u}", c, 6.29 + 5 * i)
                             for i, (u, c, _) in enumerate(utts)))
  if wavs:
    rng = np.random.default_rng(session)
    for u, _, seconds in utts:
      t = np.arange(int(SR * seconds)) / SR
      x = 0.1 + 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(len(t))
      audio.write_wav(os.path.join(wdir, f"{dialog}_{u}.wav"), x, sr=SR)
  return os.path.join(edir, f"{dialog}.txt")


def make_iemocap(root, sessions=ie.SESSIONS):
  for s in sessions:
    write_dialog(root, s, f"Ses0{s}F_impro01", UTTS)
    if s == 1:
      write_dialog(root, 1, *SCRIPT)
  # what else sits in a real EmoEvaluation folder
  os.makedirs(os.path.join(root, "Session1", "dialog", "EmoEvaluation", "Categorical"))
  return str(root)


@pytest.fixture(scope="module")
def iem(tmp_path_factory):
  return make_iemocap(tmp_path_factory.mktemp("iemocap"))


def test_speaker_is_session_and_gender_of_the_utterance():
  assert ie.speaker_of("Ses01F_impro01_F000") == "Ses01F"
  assert ie.speaker_of("Ses01F_impro01_M003") == "Ses01M"
  assert ie.speaker_of("Ses03M_script02_1_F012") == "Ses03F"
  with pytest.raises(DataError, match="not an IEMOCAP utterance id"):
    ie.speaker_of("Ses01F_impro01")


def test_four_classes_splits_speakers_and_lengths(iem, tmp_path):
  d = ie.load(iem, max_seconds=2.0, cache_dir=tmp_path)
  assert d.class_names == ("neutral", "happy", "angry", "sad")
  assert len(d.files) == 5 * 4 + 1 and d.num_skipped == 0
  f = d.files.tolist()
  i = f.index("Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M000.wav")
  assert d.labels[i] == 1 and d.speakers[i] == "Ses01M"  # exc -> happy
  j = f.index("Session1/sentences/wav/Ses01M_script01_1/Ses01M_script01_1_M003.wav")
  assert d.labels[j] == 1 and d.speakers[j] == "Ses01M"  # hap -> happy
  assert np.bincount(d.labels, minlength=4).tolist() == [5, 6, 5, 5]
  assert not any("F002" in x or "script01_1_F000" in x for x in f)  # fru, xxx dropped
  for k in range(len(f)):
    assert d.splits[k] == ("test" if f[k].startswith("Session5/") else "train")
  assert (d.splits == "test").sum() == 4
  assert sorted(set(d.speakers.tolist())) == [f"Ses0{s}{g}" for s in range(1, 6) for g in "FM"]
  # the 3 s utterance is cut at 2 s; every row normalised over its real samples
  assert d.waveforms.shape == (21, 32000) and d.lengths[j] == 32000
  assert d.lengths[f.index("Session2/sentences/wav/Ses02F_impro01/Ses02F_impro01_M001.wav")] == 4000
  for w, n in zip(d.waveforms, d.lengths):
    assert abs(w[:n].mean()) < 1e-4 and w[:n].std() == pytest.approx(1.0, abs=1e-3)
    assert not np.any(w[n:])


def test_dropped_emotions_are_counted(iem):
  rows, dropped, missing = ie.scan(iem)
  assert len(rows) == 21 and dropped == {"fru": 5, "xxx": 1} and missing == []


def test_test_session_and_folds(iem, tmp_path):
  d = ie.load(iem, test_session=2, cache_dir=tmp_path)
  sessions = np.asarray([int(x[len("Session")]) for x in d.files.tolist()])
  assert set(sessions[d.splits == "test"].tolist()) == {2}
  folds = ie.folds(d)
  assert len(folds) == 5
  for s, (train, test) in zip(ie.SESSIONS, folds):
    assert set(sessions[test].tolist()) == {s} and s not in set(sessions[train].tolist())
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(d.files)))
  assert len(folds[0][1]) == 5 and len(folds[4][1]) == 4


def test_no_sessions_and_absent_test_session(tmp_path):
  os.makedirs(tmp_path / "empty" / "wav")
  with pytest.raises(DataError, match="no Session1..Session5 folders"):
    ie.load(tmp_path / "empty")
  root = make_iemocap(tmp_path / "four", sessions=(1, 2, 3, 4))
  with pytest.raises(DataError, match=r"test_session=5, but .* holds sessions \[1, 2, 3, 4\]"):
    ie.load(root)
  d = ie.load(root, test_session=4)
  with pytest.raises(DataError, match="no utterance of session 5"):
    ie.folds(d)


def test_unknown_emotion_code_names_file_and_line(tmp_path):
  root = make_iemocap(tmp_path / "i")
  write_dialog(root, 3, "Ses03F_impro02", [("F000", "neu", 0.5), ("M000", "joy", 0.5)])
  # header (2 lines) + one 5-line turn: the second label line is line 8
  with pytest.raises(DataError, match=r"Ses03F_impro02\.txt:8: unknown emotion code 'joy'"):
    ie.load(root)


def test_label_without_wav_raises_or_is_skipped(tmp_path):
  root = make_iemocap(tmp_path / "i")
  write_dialog(root, 4, "Ses04M_impro03", [("F000", "sad", 0.5), ("M000", "fru", 0.5)],
               wavs=False)
  with pytest.raises(DataError, match=r"Ses04M_impro03\.txt:3: utterance Ses04M_impro03_F000 "
                                      r"has no audio \(.*Ses04M_impro03_F000\.wav does not exist"):
    ie.load(root)
  d = ie.load(root, skip_errors=True)
  assert d.num_skipped == 1 and len(d.files) == 21  # the fru line is dropped, not skipped


def test_corrupt_audio_raises_or_is_skipped(tmp_path):
  root = make_iemocap(tmp_path / "i")
  bad = os.path.join(root, "Session2/sentences/wav/Ses02F_impro01/Ses02F_impro01_F001.wav")
  with open(bad, "r+b") as f:
    f.truncate(100)  # the header promises more samples than the file holds
  with pytest.raises(audio.AudioError, match=r"Ses02F_impro01_F001\.wav: is truncated"):
    ie.load(root)
  d = ie.load(root, skip_errors=True)
  assert d.num_skipped == 1 and len(d.files) == 20
  assert np.bincount(d.labels, minlength=4).tolist() == [5, 6, 4, 5]


def test_malformed_label_line(tmp_path):
  root = make_iemocap(tmp_path / "i")
  path = os.path.join(root, "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt")
  with open(path, "a") as f:
    f.write("[1.0 - 2.0]\tSes01F_impro01_F009\n")  # 2 + 5 turns of 5 lines: line 28
  with pytest.raises(DataError, match=r"Ses01F_impro01\.txt:28: malformed label line"):
    ie.load(root)
