"""The constant-transcript floor for ASR (experiments/asr_constant_transcripts.py), on a corpus
small enough to score by hand."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "asr_constant_transcripts", ROOT / "experiments" / "asr_constant_transcripts.py")
act = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(act)


def test_hand_scored_baselines():
  train = ["ab ab", "ab cd", "ab"]  # "ab" is the commonest word; 12 characters, 5 words
  test = ["ab ab ab", "cd"]  # 10 characters, 4 words
  rows = {what: (text, w, c) for what, text, w, c in
          act.constant_baselines(train, test, sample=3)}
  assert rows["empty"] == ("", 1.0, 1.0)
  # training CER of "ab" x k: k=1 (3+3+0)/12, k=2 (0+2+3)/12, k=3 (3+5+6)/12: k=2 wins
  text, w, c = rows["commonest word repeated, best CER on training"]
  assert text == "ab ab"
  assert w == pytest.approx(3 / 4)  # one deletion; "cd" -> one substitution and one insertion
  assert c == pytest.approx(8 / 10)  # three deletions; "cd" -> two substitutions, three insertions
  # training WER: k=1 and k=2 both 2/5 (k=3: 5/5); the tie goes to the first in order
  text, w, c = rows["commonest word repeated, best WER on training"]
  assert text == "ab"
  assert w == pytest.approx(3 / 4)  # two deletions; one substitution
  assert c == pytest.approx(8 / 10)  # six deletions; two substitutions
  # every training sentence scores 2/5 on training: the first in order
  assert rows["training sentence, best WER on training"][0] == "ab"


def test_a_non_asr_config_is_refused(capsys):
  with pytest.raises(SystemExit):
    act.main(["--config", str(ROOT / "configs" / "kws12.py")])
  assert "an ASR config is needed" in capsys.readouterr().err
