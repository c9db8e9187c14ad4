"""The task units by hand: ASR labels, its WER/CER from best paths (per test split too), length
filtering; classification metrics; the registry."""
import numpy as np
import pytest

from fedexit_jax import tasks
from fedexit_jax.data import utterances
from fedexit_jax.tasks import asr


def _utts(texts, splits, lengths):
  n = len(texts)
  return utterances.Utterances(
      np.zeros((n, max(lengths)), np.float32), np.asarray(lengths, np.int32),
      np.full(n, -1, np.int32), np.asarray(texts, dtype=str), np.asarray(["s"] * n, dtype=str),
      np.asarray(splits, dtype=str), np.asarray([f"f{i}" for i in range(n)], dtype=str), (), 0)


def test_asr_labels_are_character_ids_padded_with_the_blank():
  # vocabulary: 0 blank, 1 space, 2 apostrophe, 3 'a', 4 'b'
  labels = tasks.get("asr").labels(_utts(["ab", "b a", "a'"], ["test-clean"] * 3, [5, 5, 5]))
  np.testing.assert_array_equal(labels, [[3, 4, 0], [4, 1, 3], [3, 2, 0]])
  assert labels.dtype == np.int32


def test_asr_metrics_decode_best_paths_and_split_by_test_set():
  test = _utts(["ab", "b a"], ["test-clean", "test-other"], [5, 5])
  # exit 1: "ab" right; "b a" read as "b" (one word deleted). exit 2: both right.
  # frames: a a blank b -> "ab"; b blank -1 -1 -> "b"; b space a a -> "b a"
  paths = np.array([[[3, 3, 0, 4], [4, 0, -1, -1]],
                    [[3, 3, 0, 4], [4, 1, 3, 3]]])
  m = tasks.get("asr").metrics({"best_path": paths}, test)
  np.testing.assert_allclose(m["wer"], [1 / 3, 0.0])  # 1 error over 3 reference words
  np.testing.assert_allclose(m["cer"], [2 / 5, 0.0])  # "b a" -> "b": 2 chars of 5
  np.testing.assert_allclose(m["wer_test_clean"], [0.0, 0.0])
  np.testing.assert_allclose(m["wer_test_other"], [0.5, 0.0])


def test_asr_leaves_out_utterances_cut_at_max_seconds():
  data = _utts(["ab", "b", "a"], ["train-clean-100"] * 3, [64000, 100, 63999])
  kept = asr._whole(data, max_seconds=4.0)  # 64,000 samples = 4 s: cut, so its text is wrong
  assert kept.texts.tolist() == ["b", "a"] and kept.waveforms.shape == (2, 63999)
  with pytest.raises(ValueError, match="every utterance is longer than data.max_seconds"):
    asr._whole(data, max_seconds=0.001)


def test_classification_tasks_report_error_and_registry_names_every_task():
  ev = {"error": np.array([0.25, 0.5]), "loss": np.array([1.0, 2.0])}
  for name in ("kws", "sid", "er"):
    task = tasks.get(name)
    assert task.head == "pooled" and task.primary == "error"
    assert task.metrics(ev, None) == {"error": ev["error"]}
  assert tasks.get("asr").head == "frames" and tasks.get("asr").primary == "wer"
  with pytest.raises(ValueError, match="unknown task 'x'"):
    tasks.get("x")
  with pytest.raises(ValueError, match="comes from the corpus"):
    tasks.get("sid").num_outputs(None, None)


def test_sid_leaves_verification_speakers_out_of_identification():
  """Real VoxCeleb1 lists its 40 trial speakers in iden_split.txt too: they are no client's."""
  from fedexit_jax.tasks import sid  # pylint: disable=import-outside-toplevel
  data = _utts(["", "", "", ""], ["train", "test", "train", "train"], [5, 5, 5, 5])
  data = data._replace(speakers=np.array(["id1", "id2", "id2", "id3"]),
                       labels=np.array([0, 1, 1, 2], np.int32), class_names=("id1", "id2", "id3"))
  out = sid.without_speakers(data, {"id2"})
  assert out.speakers.tolist() == ["id1", "id3"] and out.class_names == ("id1", "id3")
  np.testing.assert_array_equal(out.labels, [0, 1])  # renumbered over the remaining speakers
