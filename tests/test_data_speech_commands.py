"""The Speech Commands folder loader on a mini folder in exactly the v0.02 layout."""
from __future__ import annotations

import os

import numpy as np
import pytest

from fedexit_jax.data import audio
from fedexit_jax.data import speech_commands as sc

# speaker -> split (as the official lists split by speaker)
SPEAKERS = {"aaaa1111": "train", "bbbb2222": "train", "cccc3333": "validation",
            "dddd4444": "test"}
WORDS = ("yes", "no", "stop", "marvin", "wow")  # 3 keywords, 2 other words


def make_mini_folder(root, words=WORDS, speakers=SPEAKERS, sr=16000, background=True):
  """Tones in the Speech Commands layout: word/<speaker>_nohash_<n>.wav, two lists, noise."""
  val, test = [], []
  for w_i, word in enumerate(words):
    os.makedirs(os.path.join(root, word), exist_ok=True)
    for s_i, (spk, split) in enumerate(speakers.items()):
      for n in range(2):
        rel = f"{word}/{spk}_nohash_{n}.wav"
        seconds = 0.5 if n else 1.0  # some clips shorter than 1 s, as in the real data
        t = np.arange(int(sr * seconds)) / sr
        x = 0.3 * np.sin(2 * np.pi * (200 + 100 * w_i + 7 * s_i) * t)
        audio.write_wav(os.path.join(root, rel), x, sr=sr)
        (val if split == "validation" else test if split == "test" else []).append(rel)
  with open(os.path.join(root, "validation_list.txt"), "w") as f:
    f.write("\n".join(val) + "\n")
  with open(os.path.join(root, "testing_list.txt"), "w") as f:
    f.write("\n".join(test) + "\n")
  if background:
    os.makedirs(os.path.join(root, sc.BACKGROUND_DIR))
    rng = np.random.default_rng(0)
    audio.write_wav(os.path.join(root, sc.BACKGROUND_DIR, "white_noise.wav"),
                    0.1 * rng.standard_normal(16000 * 20), sr=16000)
  with open(os.path.join(root, "README.md"), "w") as f:
    f.write("not audio\n")
  return root


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
  return make_mini_folder(str(tmp_path_factory.mktemp("sc")))


def test_label_sets():
  assert len(sc.LABELS_12) == 12 and sc.LABELS_12[-2:] == ("_silence_", "_unknown_")
  assert len(sc.LABELS_35) == 35 and len(set(sc.LABELS_35)) == 35
  assert set(sc.KEYWORDS) <= set(sc.LABELS_35)
  with pytest.raises(ValueError, match="label_set"):
    sc.class_names("20")


def test_twelve_classes_labels_splits_speakers_silence_unknown(mini, tmp_path):
  d = sc.load_folder(mini, label_set="12", cache_dir=tmp_path, silence_fraction=0.25, seed=1)
  n_words = len(WORDS) * len(SPEAKERS) * 2  # 40 utterances
  per_split = {"train": 20, "validation": 10, "test": 10}
  silence = {s: int(round(0.25 * n)) for s, n in per_split.items()}  # 5, 2 (2.5 rounds to 2), 2
  assert d.waveforms.shape == (n_words + sum(silence.values()), 16000)
  assert d.waveforms.dtype == np.float32 and d.labels.dtype == np.int32
  names = d.class_names
  assert names == sc.LABELS_12
  words = np.array([f.split("/")[0] for f in d.files])
  real = words != sc.BACKGROUND_DIR
  # keywords keep their own label; marvin and wow are _unknown_
  for w in ("yes", "no", "stop"):
    assert set(d.labels[words == w]) == {names.index(w)}
  assert set(d.labels[np.isin(words, ["marvin", "wow"])]) == {names.index("_unknown_")}
  # splits come from the lists, speakers from the file names
  for spk, split in SPEAKERS.items():
    rows = d.speakers == spk
    assert rows.sum() == 10 and set(d.splits[rows]) == {split}
  assert set(d.speakers[real]) == set(SPEAKERS)
  # _silence_: speakerless windows of the noise file, counted per split
  sil = d.labels == names.index("_silence_")
  assert not np.any(sil & real) and set(d.speakers[sil]) == {""}
  for split, k in silence.items():
    assert np.sum(sil & (d.splits == split)) == k
  # split stretches of the noise file never overlap: test windows start after 90 % of 20 s
  offsets = np.array([int(f.split("#")[1]) for f in d.files[sil]])
  assert np.all(offsets[d.splits[sil] == "test"] >= 0.9 * 20 * 16000)
  assert np.all(offsets[d.splits[sil] == "train"] + 16000 <= 0.8 * 20 * 16000)
  # normalised over the real samples; the 0.5 s clips are zero-padded
  short = d.lengths == 8000
  assert short.sum() == n_words // 2 and d.lengths[~short].min() == 16000
  np.testing.assert_allclose(d.waveforms[short][:, :8000].std(1), 1.0, atol=1e-3)
  assert not d.waveforms[short][:, 8000:].any()
  assert d.num_skipped == 0


def test_thirty_five_classes_have_no_silence_or_unknown(mini, tmp_path):
  d = sc.load_folder(mini, label_set="35", cache_dir=tmp_path)
  assert d.class_names == sc.LABELS_35 and len(d.labels) == 40
  words = np.array([f.split("/")[0] for f in d.files])
  for w in WORDS:
    assert set(d.labels[words == w]) == {sc.LABELS_35.index(w)}
  assert "" not in set(d.speakers)


def test_second_load_comes_from_the_cache(mini, tmp_path):
  first = sc.load_folder(mini, label_set="12", cache_dir=tmp_path)
  files = os.listdir(tmp_path)
  assert len(files) == 1 and files[0].endswith(".npz")
  second = sc.load_folder(mini, label_set="12", cache_dir=tmp_path)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # other arguments -> another cache entry, not a stale hit
  sc.load_folder(mini, label_set="12", cache_dir=tmp_path, silence_fraction=0.0)
  assert len(os.listdir(tmp_path)) == 2


def test_select_split(mini, tmp_path):
  d = sc.load_folder(mini, label_set="35", cache_dir=tmp_path)
  test = sc.select(d, "test")
  assert set(test.speakers) == {"dddd4444"} and test.waveforms.shape == (10, 16000)
  with pytest.raises(ValueError, match="split"):
    sc.select(d, "dev")


def test_corrupt_file_raises_or_is_skipped_and_counted(tmp_path):
  root = make_mini_folder(str(tmp_path / "sc"), background=False)
  bad = os.path.join(root, "yes", "aaaa1111_nohash_0.wav")
  with open(bad, "wb") as f:
    f.write(b"not a wav at all")
  with pytest.raises(audio.AudioError, match="aaaa1111_nohash_0.wav"):
    sc.load_folder(root, label_set="35", use_cache=False)
  d = sc.load_folder(root, label_set="35", use_cache=False, skip_errors=True)
  assert d.num_skipped == 1 and len(d.labels) == 39
  assert "yes/aaaa1111_nohash_0.wav" not in set(d.files)


def test_truncated_file_raises_or_is_skipped_and_counted(tmp_path):
  root = make_mini_folder(str(tmp_path / "sc"), background=False)
  bad = os.path.join(root, "no", "bbbb2222_nohash_0.wav")  # 1 s declared, 0.1 s left
  with open(bad, "r+b") as f:
    f.truncate(44 + 2 * 1600)
  with pytest.raises(audio.AudioError, match="bbbb2222_nohash_0.wav: is truncated"):
    sc.load_folder(root, label_set="35", use_cache=False)
  d = sc.load_folder(root, label_set="35", use_cache=False, skip_errors=True)
  assert d.num_skipped == 1 and "no/bbbb2222_nohash_0.wav" not in set(d.files)


def test_wrong_rate_rejected_unless_resampling(tmp_path):
  root = make_mini_folder(str(tmp_path / "sc8k"), words=("go",), sr=8000, background=False)
  with pytest.raises(audio.AudioError, match="8000 Hz, expected 16000 Hz"):
    sc.load_folder(root, label_set="35", use_cache=False, resample=False)
  d = sc.load_folder(root, label_set="35", use_cache=False)
  assert d.lengths.max() == 16000  # 1 s at 8 kHz -> 16000 samples


def test_missing_lists_or_noise_are_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    sc.load_folder(tmp_path / "nope")
  root = make_mini_folder(str(tmp_path / "nolists"), background=False)
  with pytest.raises(FileNotFoundError, match="_background_noise_"):
    sc.load_folder(root, label_set="12", use_cache=False)
  os.remove(os.path.join(root, "testing_list.txt"))
  with pytest.raises(FileNotFoundError, match="testing_list.txt"):
    sc.load_folder(root, label_set="35", use_cache=False)
