"""The VoxCeleb1 loader on a tiny folder the test writes in the real layout (wav/idXXXXX/<video>/
<n>.wav, iden_split.txt, veri_test*.txt)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from fedexit_jax.data import audio
from fedexit_jax.data import voxceleb as vc
from fedexit_jax.data.speech_commands import DataError

SR = 16000
# relative path -> (iden split code, seconds)
FILES = {"id10002/x6uYqmx31kE/00001.wav": ("1", 0.5),
         "id10002/x6uYqmx31kE/00002.wav": ("2", 1.0),
         "id10002/8jEAjG6SegY/00008.wav": ("3", 2.0),
         "id10001/1zcIwhmdeo4/00001.wav": ("1", 0.75),
         "id10001/1zcIwhmdeo4/00002.wav": ("3", 0.25)}
TRIALS = [("1", "id10002/x6uYqmx31kE/00001.wav", "id10002/8jEAjG6SegY/00008.wav"),
          ("0", "id10002/x6uYqmx31kE/00001.wav", "id10001/1zcIwhmdeo4/00002.wav"),
          ("0", "id10001/1zcIwhmdeo4/00001.wav", "id10002/8jEAjG6SegY/00008.wav")]


def write_noise(path, seconds, seed):
  """Noise with an offset and a scale, so normalisation has something to undo."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(seed)
  audio.write_wav(path, 0.2 + 0.05 * rng.standard_normal(int(SR * seconds)), sr=SR)


def make_voxceleb(root, trials=("veri_test2.txt",), iden_lines=None):
  for i, (rel, (_, seconds)) in enumerate(FILES.items()):
    write_noise(os.path.join(root, "wav", rel), seconds, i)
  lines = iden_lines or [f"{code} {rel}" for rel, (code, _) in FILES.items()]
  with open(os.path.join(root, vc.IDEN_SPLIT), "w") as f:
    f.write("\n".join(lines) + "\n")
  for name in trials:
    with open(os.path.join(root, name), "w") as f:
      f.write("".join(" ".join(t) + "\n" for t in TRIALS))
  return str(root)


@pytest.fixture(scope="module")
def vox(tmp_path_factory):
  return make_voxceleb(tmp_path_factory.mktemp("vox"))


def test_identification_labels_splits_speakers_lengths(vox, tmp_path):
  d = vc.load_identification(vox, max_seconds=1.5, cache_dir=tmp_path)
  assert d.class_names == ("id10001", "id10002")
  assert d.files.tolist() == [f"wav/{rel}" for rel in FILES]  # the split file's order
  assert d.speakers.tolist() == ["id10002"] * 3 + ["id10001"] * 2
  assert d.labels.tolist() == [1, 1, 1, 0, 0] and d.labels.dtype == np.int32
  assert d.splits.tolist() == ["train", "train", "test", "train", "test"]  # 2 (dev) -> train
  assert d.texts.tolist() == [""] * 5 and d.num_skipped == 0
  # the 2 s clip is cut at 1.5 s, and the longest row sets the width
  assert d.waveforms.shape == (5, 24000) and d.waveforms.dtype == np.float32
  assert d.lengths.tolist() == [8000, 16000, 24000, 12000, 4000]
  for w, n in zip(d.waveforms, d.lengths):
    assert abs(w[:n].mean()) < 1e-4 and w[:n].std() == pytest.approx(1.0, abs=1e-3)
    assert not np.any(w[n:])


def test_cache_returns_the_same_and_follows_edits(tmp_path):
  root = make_voxceleb(tmp_path / "vox")
  a = vc.load_identification(root)
  assert len(os.listdir(os.path.join(root, ".fedexit_cache"))) == 1
  b = vc.load_identification(root)
  np.testing.assert_allclose(a.waveforms, b.waveforms, atol=1e-6)
  assert a.files.tolist() == b.files.tolist() and a.class_names == b.class_names
  write_noise(os.path.join(root, "wav", "id10001/1zcIwhmdeo4/00002.wav"), 0.5, 9)
  c = vc.load_identification(root)
  assert c.lengths[-1] == 8000 and len(os.listdir(os.path.join(root, ".fedexit_cache"))) == 2


def test_verification_trials_index_the_utterances(vox, tmp_path):
  d, t = vc.load_verification(vox, cache_dir=tmp_path)
  mentioned = sorted({r for _, a, b in TRIALS for r in (a, b)})
  assert d.files.tolist() == [f"wav/{r}" for r in mentioned]
  assert set(d.splits.tolist()) == {"verify"} and d.labels.tolist() == [-1] * 4
  assert d.class_names == () and d.speakers.tolist() == ["id10001"] * 2 + ["id10002"] * 2
  files = d.files.tolist()
  assert t.idx_a.tolist() == [files.index(f"wav/{a}") for _, a, _ in TRIALS] == [3, 3, 0]
  assert t.idx_b.tolist() == [files.index(f"wav/{b}") for _, _, b in TRIALS] == [2, 1, 2]
  assert t.same.tolist() == [True, False, False] and t.same.dtype == bool
  assert d.lengths.tolist() == [12000, 4000, 32000, 8000]  # 8 s default cap


def test_verification_trials_file_choice(tmp_path):
  root = make_voxceleb(tmp_path / "v1", trials=("veri_test.txt",))
  assert vc.trials_path(root).endswith("veri_test.txt")  # falls back to the original list
  _, t = vc.load_verification(root, use_cache=False)
  assert len(t.same) == 3
  root = make_voxceleb(tmp_path / "v2", trials=("veri_test.txt", "veri_test2.txt"))
  assert vc.trials_path(root).endswith("veri_test2.txt")  # the cleaned list first
  root = make_voxceleb(tmp_path / "v3", trials=())
  with pytest.raises(DataError, match="neither veri_test2.txt nor veri_test.txt"):
    vc.load_verification(root)
  with pytest.raises(DataError, match="mine.txt is missing"):
    vc.load_verification(root, trials_file="mine.txt")


def test_missing_split_file(tmp_path):
  root = make_voxceleb(tmp_path / "v")
  os.remove(os.path.join(root, vc.IDEN_SPLIT))
  with pytest.raises(DataError, match=r"iden_split\.txt is missing"):
    vc.load_identification(root)


@pytest.mark.parametrize("bad, match", [
    ("1 id10001/nope/00009.wav", r"iden_split\.txt:3: .*nope/00009\.wav does not exist"),
    ("4 id10001/1zcIwhmdeo4/00001.wav", r"iden_split\.txt:3: expected '<1\|2\|3>"),
    ("1", r"iden_split\.txt:3: expected"),
    ("1 speaker1/1zcIwhmdeo4/00001.wav", r"iden_split\.txt:3: .*not a VoxCeleb1 path"),
])
def test_bad_split_lines_name_the_line(tmp_path, bad, match):
  lines = [f"{code} {rel}" for rel, (code, _) in FILES.items()]
  root = make_voxceleb(tmp_path / "v", iden_lines=lines[:2] + [bad] + lines[2:])
  with pytest.raises(DataError, match=match):
    vc.load_identification(root)


def test_bad_trial_line_names_the_line(tmp_path):
  root = make_voxceleb(tmp_path / "v")
  with open(os.path.join(root, "veri_test2.txt"), "a") as f:
    f.write("1 id10001/1zcIwhmdeo4/00001.wav id10009/gone/00001.wav\n")
  with pytest.raises(DataError, match=r"veri_test2\.txt:4: .*id10009/gone/00001\.wav does not"):
    vc.load_verification(root)


def test_corrupt_audio_raises_or_is_skipped(tmp_path):
  root = make_voxceleb(tmp_path / "v")
  bad = os.path.join(root, "wav", "id10002/x6uYqmx31kE/00002.wav")
  with open(bad, "wb") as f:
    f.write(b"RIFF not really a wav")
  with pytest.raises(audio.AudioError, match=r"x6uYqmx31kE/00002\.wav"):
    vc.load_identification(root)
  d = vc.load_identification(root, skip_errors=True)
  assert d.num_skipped == 1 and len(d.files) == 4
  assert "wav/id10002/x6uYqmx31kE/00002.wav" not in d.files.tolist()
  assert d.class_names == ("id10001", "id10002")  # the classes still come from the split file
  # a trial naming a skipped file is dropped; the others still index the right rows
  bad = os.path.join(root, "wav", "id10001/1zcIwhmdeo4/00002.wav")
  with open(bad, "wb") as f:
    f.write(b"")
  v, t = vc.load_verification(root, skip_errors=True)
  assert v.num_skipped == 1 and len(t.same) == 2 and t.same.tolist() == [True, False]
  files = v.files.tolist()
  assert files[t.idx_b[1]] == "wav/id10002/8jEAjG6SegY/00008.wav"


def test_max_seconds_must_be_positive(vox):
  with pytest.raises(ValueError, match="max_seconds"):
    vc.load_identification(vox, max_seconds=0, use_cache=False)
