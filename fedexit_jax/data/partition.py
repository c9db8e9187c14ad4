"""Client partitions (by speaker, Dirichlet over labels, IID) and padded client datasets.

A partition is a list of index arrays, one per client, disjoint and covering the examples.
`client_datasets` turns one into fixed-shape arrays ([K, N_max, ...] plus a mask and counts) so
the simulator can vmap over clients; a padded row is all zeros with example_mask False.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np


class ClientDatasets(NamedTuple):
  waveforms: np.ndarray     # float32 [K, N_max, S]
  labels: np.ndarray        # int32 [K, N_max]
  example_mask: np.ndarray  # bool [K, N_max], True on real examples
  num_examples: np.ndarray  # int32 [K] (n_i in the aggregation weights)
  client_ids: Tuple[str, ...]
  lengths: np.ndarray       # int32 [K, N_max], real samples per row (0 on padding)
  indices: np.ndarray       # int64 [K, N_max], source row of each example (-1 on padding)


def by_speaker(speakers: Sequence[str], num_clients: Optional[int] = None,
               seed: int = 0) -> List[np.ndarray]:
  """Every speaker's examples go to exactly one client (the paper's natural split).

  num_clients=None: one client per speaker. Otherwise speakers (in a seeded random order,
  largest first) are dealt to the client with the fewest examples so far, which balances sizes
  without mixing a speaker across clients. Rows with no speaker ('' : Speech Commands'
  _silence_ windows) are spread uniformly at random over the clients.
  """
  speakers = np.asarray(speakers, dtype=str)
  rng = np.random.default_rng(seed)
  names, inverse, counts = np.unique(speakers, return_inverse=True, return_counts=True)
  real = np.flatnonzero(names != "")
  if real.size == 0:
    raise ValueError("by_speaker needs speaker ids; every row has speaker ''")
  if num_clients is None:
    num_clients = real.size
  if not 1 <= num_clients <= real.size:
    raise ValueError(f"num_clients={num_clients} must be between 1 and the number of "
                     f"speakers ({real.size})")
  order = real[rng.permutation(real.size)]
  order = order[np.argsort(-counts[order], kind="stable")]
  load = np.zeros(num_clients, np.int64)
  client_of = np.full(names.size, -1)
  for s in order:
    k = int(np.argmin(load))
    client_of[s] = k
    load[k] += counts[s]
  assign = client_of[inverse]
  none = np.flatnonzero(assign < 0)
  assign[none] = rng.integers(num_clients, size=none.size)
  return [np.flatnonzero(assign == k) for k in range(num_clients)]


def dirichlet(labels: Sequence[int], num_clients: int, alpha: float, seed: int = 0,
              min_examples: int = 1, max_tries: int = 100) -> List[np.ndarray]:
  """Label-skewed split: each class is divided over clients in proportions ~ Dir(alpha).

  Small alpha -> each client sees few classes; large alpha -> close to IID. Draws are repeated
  (up to max_tries) until every client has at least min_examples.
  """
  labels = np.asarray(labels)
  if alpha <= 0:
    raise ValueError(f"alpha must be positive, got {alpha}")
  if num_clients < 1 or num_clients * min_examples > labels.size:
    raise ValueError(f"cannot give {num_clients} clients {min_examples}+ examples each from "
                     f"{labels.size}")
  rng = np.random.default_rng(seed)
  for _ in range(max_tries):
    buckets = [[] for _ in range(num_clients)]
    for c in np.unique(labels):
      idx = rng.permutation(np.flatnonzero(labels == c))
      p = rng.dirichlet(np.full(num_clients, float(alpha)))
      cuts = (np.cumsum(p)[:-1] * idx.size).astype(int)
      for k, part in enumerate(np.split(idx, cuts)):
        buckets[k].append(part)
    parts = [np.sort(np.concatenate(b)) for b in buckets]
    if min(p.size for p in parts) >= min_examples:
      return parts
  raise ValueError(f"no Dirichlet(alpha={alpha}) draw in {max_tries} tries gave all "
                   f"{num_clients} clients {min_examples}+ examples; lower min_examples or "
                   "raise alpha")


def iid(num_examples: int, num_clients: int, seed: int = 0) -> List[np.ndarray]:
  """A seeded shuffle cut into num_clients near-equal parts."""
  if not 1 <= num_clients <= num_examples:
    raise ValueError(f"num_clients={num_clients} must be between 1 and {num_examples}")
  perm = np.random.default_rng(seed).permutation(num_examples)
  return [np.sort(p) for p in np.array_split(perm, num_clients)]


def holdout_speakers(speakers: Sequence[str], fraction: float, seed: int = 0
                     ) -> Tuple[np.ndarray, np.ndarray]:
  """(kept, held-out) row indices; held-out rows are whole speakers, ~fraction of them.

  For a central test set when the data has no test split by speaker. Rows with speaker '' are
  split at random in the same proportion.
  """
  speakers = np.asarray(speakers, dtype=str)
  if not 0 < fraction < 1:
    raise ValueError(f"fraction must be in (0, 1), got {fraction}")
  rng = np.random.default_rng(seed)
  names = np.unique(speakers[speakers != ""])
  n_out = max(1, int(round(fraction * names.size)))
  if n_out >= names.size:
    raise ValueError(f"holding out {n_out} of {names.size} speakers leaves none for training")
  out_names = set(rng.choice(names, size=n_out, replace=False).tolist())
  held = np.array([s in out_names for s in speakers.tolist()])
  none = speakers == ""
  held[none] = rng.random(int(none.sum())) < fraction
  return np.flatnonzero(~held), np.flatnonzero(held)


def client_datasets(waveforms: np.ndarray, labels: np.ndarray, parts: Sequence[np.ndarray],
                    max_examples: Optional[int] = None, seed: int = 0,
                    lengths: Optional[np.ndarray] = None,
                    client_ids: Optional[Sequence[str]] = None,
                    pad_multiple: int = 1) -> ClientDatasets:
  """Gathers each client's rows into [K, N_max, ...] arrays (labels [U] or [U, L] -> [K, N_max]
  or [K, N_max, L]).

  max_examples caps a client (a seeded random subset) to bound memory; pad_multiple rounds N_max
  up (e.g. to the local batch size) so batches tile the padded axis.
  """
  waveforms = np.asarray(waveforms)
  labels = np.asarray(labels)
  if waveforms.shape[0] != labels.shape[0]:
    raise ValueError(f"{waveforms.shape[0]} waveforms but {labels.shape[0]} labels")
  if lengths is None:
    lengths = np.full(labels.shape[0], waveforms.shape[-1], np.int32)
  rng = np.random.default_rng(seed)
  chosen = []
  for p in parts:
    p = np.asarray(p, np.int64)
    if max_examples is not None and p.size > max_examples:
      p = np.sort(rng.choice(p, size=max_examples, replace=False))
    chosen.append(p)
  k = len(chosen)
  n_max = max([p.size for p in chosen] + [1])
  n_max = -(-n_max // pad_multiple) * pad_multiple
  out_w = np.zeros((k, n_max) + waveforms.shape[1:], np.float32)
  out_y = np.zeros((k, n_max) + labels.shape[1:], np.int32)  # a class, or token ids [L]
  out_len = np.zeros((k, n_max), np.int32)
  mask = np.zeros((k, n_max), bool)
  index = np.full((k, n_max), -1, np.int64)
  for i, p in enumerate(chosen):
    out_w[i, :p.size] = waveforms[p]
    out_y[i, :p.size] = labels[p]
    out_len[i, :p.size] = lengths[p]
    mask[i, :p.size] = True
    index[i, :p.size] = p
  ids = tuple(str(c) for c in client_ids) if client_ids is not None else tuple(
      f"client{i:03d}" for i in range(k))
  if len(ids) != k:
    raise ValueError(f"{len(ids)} client_ids for {k} clients")
  return ClientDatasets(out_w, out_y, mask, mask.sum(1).astype(np.int32), ids, out_len, index)


def label_counts(parts: Sequence[np.ndarray], labels: np.ndarray, num_classes: int) -> np.ndarray:
  """[K, C] examples of each class per client."""
  labels = np.asarray(labels)
  return np.stack([np.bincount(labels[np.asarray(p, np.int64)], minlength=num_classes)
                   for p in parts])


def _entropy(counts: np.ndarray) -> np.ndarray:
  p = counts / np.maximum(counts.sum(-1, keepdims=True), 1)
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def label_entropy(parts: Sequence[np.ndarray], labels: np.ndarray, num_classes: int) -> float:
  """Mean over clients of the entropy (nats) of the client's label distribution; log(C) is IID
  with balanced classes, 0 is one class per client. Lower = more label skew."""
  return float(_entropy(label_counts(parts, labels, num_classes)).mean())


def summary(cd: ClientDatasets, num_classes: int) -> Dict:
  """Clients, examples per client n_i (min/mean/max, spread) and labels per client, for logs,
  run_info.json and the README. The spread matters: with equal n_i the n_i factor of Eq. 1 (and
  the `samples` weighting) is inert. Sequence labels (ASR) have no class counts."""
  n = cd.num_examples
  out = dict(clients=int(n.size), examples=int(n.sum()), padded_to=int(cd.labels.shape[1]),
             examples_per_client=dict(min=int(n.min()), mean=float(n.mean()), max=int(n.max()),
                                      std=float(n.std()), cv=float(n.std() / max(n.mean(), 1e-12)),
                                      p10=float(np.percentile(n, 10)),
                                      p50=float(np.percentile(n, 50)),
                                      p90=float(np.percentile(n, 90))))
  if cd.labels.ndim > 2:
    return out
  counts = np.stack([np.bincount(cd.labels[i][cd.example_mask[i]], minlength=num_classes)
                     for i in range(cd.labels.shape[0])])
  present = (counts > 0).sum(1)
  return dict(out, labels_per_client=dict(min=int(present.min()), mean=float(present.mean()),
                                          max=int(present.max())),
              label_entropy=float(_entropy(counts).mean()), label_counts=counts)


def format_summary(s: Dict) -> str:
  e = s["examples_per_client"]
  out = (f"{s['clients']} clients, {s['examples']} examples (padded to {s['padded_to']}); "
         f"examples/client min {e['min']} mean {e['mean']:.1f} max {e['max']}")
  if "labels_per_client" not in s:  # sequence labels
    return out
  l = s["labels_per_client"]
  return (f"{out}; labels/client min {l['min']} mean {l['mean']:.1f} max {l['max']}; "
          f"mean label entropy {s['label_entropy']:.3f} nats")
