"""The speaker-id, emotion and ASR stand-in corpora: real layouts, determinism, caching.

Parsing is written here from the real corpora's formats (not through the loaders), so the test
states what a loader of the real data may rely on.
"""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import soundfile as sf

from fedexit_jax.data import synth_tasks as st
from fedexit_jax.data import synth_text

VOX = dict(num_speakers=3, per_speaker=4, verification_speakers=2, num_trials=100, seed=0)
EMO = dict(num_sessions=2, per_speaker=11, seed=0)
ASR = dict(num_speakers=4, per_speaker=3, test_fraction=0.25, seed=0)


def _tree_bytes(root):
  out = {}
  for dirpath, _, files in os.walk(root):
    for name in files:
      if name != st.MANIFEST:  # holds the wall-clock time
        path = os.path.join(dirpath, name)
        with open(path, "rb") as f:
          out[os.path.relpath(path, root)] = f.read()
  return out


def _audio(root, ext):
  return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root)
                for f in fs if f.endswith(ext))


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
  base = tmp_path_factory.mktemp("synth_tasks")
  return dict(vox=st.synthesize_voxceleb(base / "vox", workers=1, progress=False, **VOX),
              emo=st.synthesize_iemocap(base / "emo", workers=1, progress=False, **EMO),
              asr=st.synthesize_librispeech(base / "asr", workers=1, progress=False, **ASR))


def test_voxceleb_layout_iden_split_and_balanced_disjoint_trials(corpora):
  root = corpora["vox"]
  wavs = [w[len("wav/"):] for w in _audio(root, ".wav")]
  assert all(re.fullmatch(r"id1\d{4}/[\w-]{11}/\d{5}\.wav", w) for w in wavs)
  iden = [line.split() for line in (root / "iden_split.txt").read_text().splitlines()]
  assert {s for s, _ in iden} <= {"1", "2", "3"} and len(iden) == 3 * 4
  iden_spk = {p.split("/")[0] for _, p in iden}
  assert len(iden_spk) == 3
  for spk in iden_spk:  # an IID split of each speaker's clips: 3 train, 1 test; 2+ videos
    mine = [(s, p) for s, p in iden if p.startswith(spk)]
    assert sorted(s for s, _ in mine) == ["1", "1", "1", "3"]
    assert len({p.split("/")[1] for _, p in mine}) >= 2
  trials = [line.split() for line in (root / "veri_test2.txt").read_text().splitlines()]
  assert all(len(t) == 3 and t[0] in "01" for t in trials)
  n_same = sum(t[0] == "1" for t in trials)
  assert n_same == sum(t[0] == "0" for t in trials) == 2 * 6  # all same-speaker pairs
  assert len({tuple(sorted(t[1:])) for t in trials}) == len(trials)
  assert all((t[0] == "1") == (t[1].split("/")[0] == t[2].split("/")[0]) for t in trials)
  veri = {p for t in trials for p in t[1:]}
  assert not {p.split("/")[0] for p in veri} & iden_spk
  assert sorted(veri | {p for _, p in iden}) == wavs  # every clip is in exactly one list
  for w in wavs:
    info = sf.info(root / "wav" / w)
    assert (info.samplerate, info.subtype) == (16000, "PCM_16") and 1.5 <= info.duration <= 3.0


_EMO_LINE = re.compile(r"\[(\d+\.\d{4}) - (\d+\.\d{4})\]\t(Ses(\d\d)[FM]_\w+_([FM])\d{3})\t"
                       r"(\w{3})\t\[(\d\.\d{4}), (\d\.\d{4}), (\d\.\d{4})\]")


def test_iemocap_layout_and_labels(corpora):
  root = corpora["emo"]
  labels = {}
  for session in (1, 2):
    folder = root / f"Session{session}" / "dialog" / "EmoEvaluation"
    for name in sorted(os.listdir(folder)):
      last_end = 0.0
      for line in (folder / name).read_text().splitlines():
        m = _EMO_LINE.fullmatch(line)
        if line.startswith("["):
          assert m, line
          start, end, utt, ses, _, code = m.groups()[:6]
          assert int(ses) == session and utt.startswith(name[:-4] + "_")
          assert last_end <= float(start) < float(end)
          last_end = float(end)
          vad = [float(v) for v in m.groups()[6:]]
          assert all(1 <= v <= 5 for v in vad)
          wav = root / f"Session{session}/sentences/wav/{name[:-4]}/{utt}.wav"
          assert abs(sf.info(wav).duration - (float(end) - float(start))) < 1e-3
          labels[utt] = code
  wavs = _audio(root, ".wav")
  assert sorted(os.path.basename(w)[:-4] for w in wavs) == sorted(labels)
  assert len(labels) == 2 * 2 * 11
  speakers = {u[:5] + u[-4] for u in labels}
  assert speakers == {"Ses01F", "Ses01M", "Ses02F", "Ses02M"}
  assert all(sum(u[:5] + u[-4] == s for u in labels) == 11 for s in speakers)
  assert set(labels.values()) <= set(st.EMOTIONS)
  assert all(1.0 <= sf.info(root / w).duration <= 8.0 for w in wavs)


def test_emotion_codes_mix_like_iemocap():
  codes = [st._emotion(0, f"Ses01F_impro01_F{k:03d}.{j}")[0] for k in range(100) for j in range(30)]
  share = {c: codes.count(c) / len(codes) for c in st.EMOTIONS}
  assert 0.26 < share["neu"] < 0.34 and 0.015 < share["fru"] < 0.05  # fru: for loaders to drop
  assert min(share.values()) > 0.015


def test_librispeech_layout_transcripts_and_durations(corpora):
  root = corpora["asr"]
  flacs = _audio(root, ".flac")
  assert len(flacs) == 4 * 3
  vocab = {w.upper() for w in synth_text.VOCABULARY}
  texts, split_of = {}, {}
  for rel in flacs:
    split, spk, chapter, name = rel.split(os.sep)
    assert re.fullmatch(rf"{spk}-{chapter}-\d{{4}}\.flac", name) and spk.isdigit()
    assert split in ("train-clean-100", "test-clean") and split_of.setdefault(spk, split) == split
    info = sf.info(root / rel)
    assert (info.format, info.samplerate, info.subtype) == ("FLAC", 16000, "PCM_16")
    assert 2.0 <= info.duration <= 6.0
    trans = root / split / spk / chapter / f"{spk}-{chapter}.trans.txt"
    for line in trans.read_text().splitlines():
      utt, words = line.split(" ", 1)
      texts[utt] = words
  assert sorted(texts) == sorted(os.path.basename(f)[:-5] for f in flacs)
  assert all(re.fullmatch(r"[A-Z']+( [A-Z']+)*", t) and set(t.split()) <= vocab
             for t in texts.values())
  assert sorted(split_of.values()).count("test-clean") == 1  # 25 % of 4 speakers, whole
  listed = (root / "SPEAKERS.TXT").read_text().splitlines()[1:]
  assert sorted(line.split("|")[0].strip() for line in listed) == sorted(split_of)


def test_grammar_stays_in_its_vocabulary():
  rng = np.random.default_rng(0)
  vocab = set(synth_text.VOCABULARY)
  assert 300 <= len(vocab) <= 450
  for short in (False, True):
    for _ in range(300):
      words = synth_text.sentence(rng, short=short).split()
      assert set(words) <= vocab and (5 <= len(words) <= (9 if short else 17))
  assert all(2 <= len(synth_text.phrase(rng).split()) <= 5 for _ in range(100))


@pytest.mark.parametrize("kind, kwargs", [("voxceleb", VOX), ("iemocap", EMO),
                                          ("librispeech", ASR)])
def test_byte_identical_whatever_the_workers(corpora, tmp_path, kind, kwargs):
  make = getattr(st, f"synthesize_{kind}")
  first = corpora[dict(voxceleb="vox", iemocap="emo", librispeech="asr")[kind]]
  a, b = _tree_bytes(first), _tree_bytes(make(tmp_path / "b", workers=2, progress=False, **kwargs))
  assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
  if kind == "voxceleb":  # another seed: other speakers, other audio
    c = _tree_bytes(make(tmp_path / "c", workers=2, progress=False, **{**kwargs, "seed": 1}))
    assert not any(a[k] == c[k] for k in a.keys() & c.keys() if k.endswith(".wav"))


def test_same_arguments_reuse_the_folder_other_arguments_raise(corpora, tmp_path):
  root = corpora["asr"]
  manifest = root / st.MANIFEST
  before = manifest.stat().st_mtime_ns
  assert st.synthesize_librispeech(root, progress=False, **ASR) == root
  assert manifest.stat().st_mtime_ns == before
  with pytest.raises(FileExistsError, match="other arguments"):
    st.synthesize_librispeech(root, progress=False, **{**ASR, "per_speaker": 2})
  with pytest.raises(FileExistsError, match="other arguments"):  # another corpus kind
    st.synthesize_iemocap(root, progress=False, **EMO)
  (tmp_path / "x").mkdir()
  (tmp_path / "x" / "notes.txt").write_text("mine")
  with pytest.raises(FileExistsError, match="not an empty folder"):
    st.synthesize_voxceleb(tmp_path / "x", progress=False, **VOX)
  again = st.synthesize_librispeech(tmp_path / "y", progress=False,
                                    **{**ASR, "num_speakers": 1, "per_speaker": 2})
  st.synthesize_librispeech(again, progress=False, overwrite=True,
                            **{**ASR, "num_speakers": 1, "per_speaker": 1})
  assert len(_audio(again, ".flac")) == 1
