"""Partition properties and the padded client-dataset layout."""
from __future__ import annotations

import numpy as np
import pytest

from fedexit_jax.data import partition


def _speakers_and_labels(num_speakers=20, seed=0):
  rng = np.random.default_rng(seed)
  sizes = rng.integers(3, 15, size=num_speakers)
  speakers = np.concatenate([[f"s{i:02d}"] * n for i, n in enumerate(sizes)] + [[""] * 7])
  labels = rng.integers(0, 12, size=speakers.size).astype(np.int32)
  return speakers, labels


def _assert_disjoint_and_complete(parts, n):
  allidx = np.concatenate(parts)
  assert allidx.size == n and np.array_equal(np.sort(allidx), np.arange(n))


@pytest.mark.parametrize("num_clients", [None, 7])
def test_by_speaker_never_splits_a_speaker(num_clients):
  speakers, _ = _speakers_and_labels()
  parts = partition.by_speaker(speakers, num_clients=num_clients, seed=3)
  assert len(parts) == (20 if num_clients is None else 7)
  _assert_disjoint_and_complete(parts, speakers.size)
  owner = {}
  for k, p in enumerate(parts):
    for s in set(speakers[p]) - {""}:
      assert s not in owner, f"speaker {s} on clients {owner.get(s)} and {k}"
      owner[s] = k
  assert len(owner) == 20
  if num_clients is None:  # one speaker per client (plus possibly some '' rows)
    assert all(len(set(speakers[p]) - {""}) == 1 for p in parts)


def test_by_speaker_balances_sizes_and_rejects_too_many_clients():
  speakers = np.array(["a"] * 10 + ["b"] * 6 + ["c"] * 5 + ["d"] * 1)
  parts = partition.by_speaker(speakers, num_clients=2)
  # greedy largest-first: a -> 0, b -> 1, c -> 1, d -> 0: sizes 11 and 11
  assert sorted(p.size for p in parts) == [11, 11]
  with pytest.raises(ValueError, match="number of speakers"):
    partition.by_speaker(speakers, num_clients=5)


def test_iid_is_disjoint_complete_and_even():
  parts = partition.iid(103, 10, seed=1)
  _assert_disjoint_and_complete(parts, 103)
  assert {p.size for p in parts} == {10, 11}


def test_dirichlet_is_disjoint_complete_and_skew_grows_as_alpha_shrinks():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, size=3000)
  entropy = {}
  for alpha in (100.0, 1.0, 0.1):
    parts = partition.dirichlet(labels, num_clients=20, alpha=alpha, seed=0)
    _assert_disjoint_and_complete(parts, labels.size)
    entropy[alpha] = partition.label_entropy(parts, labels, 10)
  # log(10) = 2.303 nats is a client with balanced classes
  assert entropy[100.0] > 2.2
  assert entropy[100.0] > entropy[1.0] + 0.2 > entropy[0.1] + 0.4
  with pytest.raises(ValueError, match="alpha"):
    partition.dirichlet(labels, 5, alpha=0.0)


def test_label_entropy_hand_values():
  labels = np.array([0, 0, 1, 1, 2, 2])
  # client 0: {0, 0} -> 0 nats; client 1: {1, 1, 2, 2} -> log 2
  assert partition.label_entropy([np.array([0, 1]), np.array([2, 3, 4, 5])], labels, 3) == \
      pytest.approx(0.5 * np.log(2))


def test_holdout_speakers_keeps_speakers_whole():
  speakers, _ = _speakers_and_labels()
  kept, held = partition.holdout_speakers(speakers, 0.2, seed=0)
  _assert_disjoint_and_complete([kept, held], speakers.size)
  real = set(speakers) - {""}
  held_spk = set(speakers[held]) - {""}
  assert len(held_spk) == 4 and not held_spk & (set(speakers[kept]) - {""})
  assert held_spk < real


def test_client_datasets_layout_padding_and_cap():
  waveforms = np.arange(10 * 4, dtype=np.float32).reshape(10, 4) + 1.0
  labels = np.arange(10, dtype=np.int32)
  parts = [np.array([0, 1, 2]), np.array([3]), np.array([4, 5, 6, 7, 8, 9])]
  cd = partition.client_datasets(waveforms, labels, parts)
  assert cd.waveforms.shape == (3, 6, 4) and cd.labels.shape == (3, 6)
  assert cd.num_examples.tolist() == [3, 1, 6] and cd.num_examples.dtype == np.int32
  assert cd.example_mask.sum(1).tolist() == [3, 1, 6]
  np.testing.assert_array_equal(cd.waveforms[1, 0], waveforms[3])
  assert not cd.waveforms[1, 1:].any() and cd.labels[1, 1:].tolist() == [0] * 5
  assert cd.client_ids == ("client000", "client001", "client002")
  for k, p in enumerate(parts):  # source rows of each client's examples, -1 on padding
    assert cd.indices[k, :len(p)].tolist() == list(p) and np.all(cd.indices[k, len(p):] == -1)
  capped = partition.client_datasets(waveforms, labels, parts, max_examples=2, pad_multiple=4)
  assert capped.labels.shape == (3, 4) and capped.num_examples.tolist() == [2, 1, 2]
  assert set(capped.labels[2][capped.example_mask[2]]) <= {4, 5, 6, 7, 8, 9}
  s = partition.summary(cd, num_classes=10)
  assert s["clients"] == 3 and s["examples"] == 10
  # n = 3, 1, 6: population sd sqrt(38/9), linear percentiles of [1, 3, 6] at 0.2 and 1.8
  sd = (38 / 9) ** 0.5
  assert s["examples_per_client"] == dict(min=1, mean=pytest.approx(10 / 3), max=6,
                                          std=pytest.approx(sd), cv=pytest.approx(sd * 0.3),
                                          p10=pytest.approx(1.4), p50=pytest.approx(3.0),
                                          p90=pytest.approx(5.4))
  assert s["labels_per_client"]["max"] == 6 and s["label_counts"].sum() == 10
  assert "3 clients" in partition.format_summary(s)
