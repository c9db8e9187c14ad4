"""The LibriSpeech loader on a tiny folder the test writes in the real layout
(<split>/<spk>/<chapter>/<spk>-<chapter>-<n>.flac and <spk>-<chapter>.trans.txt), and the CTC
character vocabulary."""
from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from fedexit_jax.data import audio
from fedexit_jax.data import librispeech as ls
from fedexit_jax.data.speech_commands import DataError

SR = 16000
# split -> spk -> chapter -> [(n, transcript, seconds)]
CORPUS = {
    "train-clean-100": {
        "103": {"1240": [(0, "CHAPTER ONE MISSUS RACHEL LYNDE IS SURPRISED", 1.0),
                         (1, "THAT HAD ITS SOURCE AWAY BACK IN THE WOODS OF THE OLD", 2.5)]},
        "1034": {"121119": [(12, "SHE DIDN'T KNOW  WHAT-TO DO", 0.5)]}},
    "dev-clean": {"84": {"121123": [(0, "GO DO YOU HEAR", 0.75)]}},
}


def write_flac(path, seconds, seed):
  rng = np.random.default_rng(seed)
  t = np.arange(int(SR * seconds)) / SR
  x = -0.05 + 0.2 * np.sin(2 * np.pi * 180 * t) + 0.02 * rng.standard_normal(len(t))
  sf.write(path, x.astype(np.float32), SR, format="FLAC", subtype="PCM_16")


def make_librispeech(root, corpus=None):
  for split, spks in (corpus or CORPUS).items():
    for spk, chapters in spks.items():
      for chapter, utts in chapters.items():
        cdir = os.path.join(root, split, spk, chapter)
        os.makedirs(cdir)
        with open(os.path.join(cdir, f"{spk}-{chapter}.trans.txt"), "w") as f:
          for n, text, seconds in utts:
            f.write(f"{spk}-{chapter}-{n:04d} {text}\n")
            write_flac(os.path.join(cdir, f"{spk}-{chapter}-{n:04d}.flac"), seconds, n)
  return str(root)


@pytest.fixture(scope="module")
def libri(tmp_path_factory):
  return make_librispeech(tmp_path_factory.mktemp("libri") / "LibriSpeech")


def test_vocabulary_ids_and_round_trip():
  assert len(ls.VOCAB) == 29 and ls.VOCAB[0] == ls.BLANK
  assert ls.text_to_ids(" ").tolist() == [1] and ls.text_to_ids("'").tolist() == [2]
  assert ls.text_to_ids("a").tolist() == [3] and ls.text_to_ids("z").tolist() == [28]
  ids = ls.text_to_ids("didn't go")
  assert ids.dtype == np.int32 and ids.tolist() == [6, 11, 6, 16, 2, 22, 1, 9, 17]
  assert ls.ids_to_text(ids) == "didn't go"
  assert ls.ids_to_text([0, 9, 0, 9, 17, 0]) == "ggo"  # blanks dropped, repeats kept
  with pytest.raises(ValueError, match=r"character 'A' at position 0"):
    ls.text_to_ids("A b")
  with pytest.raises(ValueError, match=r"character '-' at position 3"):
    ls.text_to_ids("abc-d")
  with pytest.raises(ValueError, match="id 29 is outside"):
    ls.ids_to_text([3, 29])
  assert ls.normalize_text("SHE DIDN'T KNOW  WHAT-TO DO.") == "she didn't know what to do"


def test_splits_texts_speakers_and_lengths(libri, tmp_path):
  d = ls.load(libri, splits=("train-clean-100", "dev-clean"), max_seconds=2.0,
              cache_dir=tmp_path)
  assert d.files.tolist() == ["train-clean-100/103/1240/103-1240-0000.flac",
                              "train-clean-100/103/1240/103-1240-0001.flac",
                              "train-clean-100/1034/121119/1034-121119-0012.flac",
                              "dev-clean/84/121123/84-121123-0000.flac"]
  assert d.texts.tolist() == ["chapter one missus rachel lynde is surprised",
                              "that had its source away back in the woods of the old",
                              "she didn't know what to do", "go do you hear"]
  assert d.speakers.tolist() == ["103", "103", "1034", "84"]
  assert d.splits.tolist() == ["train-clean-100"] * 3 + ["dev-clean"]
  assert d.labels.tolist() == [-1] * 4 and d.class_names == () and d.num_skipped == 0
  assert d.waveforms.shape == (4, 32000) and d.lengths.tolist() == [16000, 32000, 8000, 12000]
  for w, n in zip(d.waveforms, d.lengths):
    assert abs(w[:n].mean()) < 1e-4 and w[:n].std() == pytest.approx(1.0, abs=1e-3)
    assert not np.any(w[n:])
  for t in d.texts.tolist():
    assert ls.ids_to_text(ls.text_to_ids(t)) == t


def test_default_split_and_root_at_a_split_folder(libri, tmp_path):
  d = ls.load(libri, cache_dir=tmp_path)
  assert set(d.splits.tolist()) == {"train-clean-100"} and len(d.files) == 3
  c = ls.load(libri, cache_dir=tmp_path)  # from the .npz this time
  assert len(os.listdir(tmp_path)) == 1 and c.class_names == () and c.num_skipped == 0
  assert c.texts.tolist() == d.texts.tolist() and c.labels.tolist() == [-1] * 3
  np.testing.assert_allclose(c.waveforms, d.waveforms, atol=1e-6)
  dev = os.path.join(libri, "dev-clean")
  d = ls.load(dev, splits=("dev-clean",), cache_dir=tmp_path)
  assert d.files.tolist() == ["84/121123/84-121123-0000.flac"]
  assert d.splits.tolist() == ["dev-clean"] and d.texts.tolist() == ["go do you hear"]
  with pytest.raises(DataError, match=r"dev-clean is itself a LibriSpeech split folder "
                                      r"\('dev-clean'\); pass splits=\('dev-clean',\)"):
    ls.load(dev)


def test_missing_split_folder(libri):
  with pytest.raises(DataError, match=r"LibriSpeech/test-other is missing"):
    ls.load(libri, splits=("dev-clean", "test-other"))


def _one_chapter(tmp_path):
  root = make_librispeech(tmp_path / "L", {"dev-clean": CORPUS["train-clean-100"]})
  return root, os.path.join(root, "dev-clean", "103", "1240")


def test_missing_transcript_file_names_the_folder(tmp_path):
  root, cdir = _one_chapter(tmp_path)
  os.remove(os.path.join(cdir, "103-1240.trans.txt"))
  with pytest.raises(DataError, match=r"dev-clean/103/1240 holds 2 \.flac file\(s\) but no "
                                      r"103-1240\.trans\.txt"):
    ls.load(root, splits=("dev-clean",))


def test_transcript_line_without_audio(tmp_path):
  root, cdir = _one_chapter(tmp_path)
  os.remove(os.path.join(cdir, "103-1240-0001.flac"))
  with pytest.raises(DataError, match=r"103-1240\.trans\.txt:2: .*103-1240-0001\.flac does not "
                                      "exist"):
    ls.load(root, splits=("dev-clean",))


def test_audio_without_transcript_line(tmp_path):
  root, cdir = _one_chapter(tmp_path)
  write_flac(os.path.join(cdir, "103-1240-0007.flac"), 0.5, 7)
  with pytest.raises(DataError, match=r"103-1240-0007\.flac has no line in .*103-1240\.trans"):
    ls.load(root, splits=("dev-clean",))


@pytest.mark.parametrize("line", ["103-1240-0000 AGAIN", "103-9999-0005 WRONG CHAPTER", "oops"])
def test_bad_transcript_line(tmp_path, line):
  root, cdir = _one_chapter(tmp_path)
  with open(os.path.join(cdir, "103-1240.trans.txt"), "a") as f:
    f.write(line + "\n")
  with pytest.raises(DataError, match=r"103-1240\.trans\.txt:3: expected a new '103-1240-<n>"):
    ls.load(root, splits=("dev-clean",))


def test_corrupt_audio_raises_or_is_skipped(tmp_path):
  root, cdir = _one_chapter(tmp_path)
  with open(os.path.join(cdir, "103-1240-0000.flac"), "wb") as f:
    f.write(b"fLaC but nothing else")
  with pytest.raises(audio.AudioError, match=r"103-1240-0000\.flac: cannot decode"):
    ls.load(root, splits=("dev-clean",))
  d = ls.load(root, splits=("dev-clean",), skip_errors=True)
  assert d.num_skipped == 1
  assert d.files.tolist() == ["dev-clean/103/1240/103-1240-0001.flac",
                              "dev-clean/1034/121119/1034-121119-0012.flac"]
  assert d.texts.tolist()[1] == "she didn't know what to do"
