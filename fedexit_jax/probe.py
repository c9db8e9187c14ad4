"""Linear probe per layer: which Transformer layer of a frozen backbone best serves the task.

SUPERB and the paper pick "the task's best layer" (the deep tier's depth) this way: freeze the
backbone, pool every layer's hidden states over time (mean and std, `heads.stats_pool`, as the
exit heads do), fit a logistic regression per layer on the task's training clients' utterances
(all clients pooled: the probe measures the representation, not federated training), and score
it on the held-out test speakers. Features are standardised with the training set's statistics
and the regularisation is fixed (`C`), so layers are compared under one setting, not each tuned.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from fedexit_jax import config_utils, models, pipeline
from fedexit_jax.models import heads, wav2vec2
from fedexit_jax.models.config import EncoderConfig

C = 1.0  # inverse L2 strength of every layer's logistic regression (sklearn's default)


def pooled_layers(encoder: EncoderConfig, params: dict, feats: np.ndarray, frame_mask: np.ndarray,
                  batch_size: int = 128) -> np.ndarray:
  """Cached conv features [N, T, C] -> statistics-pooled hidden states of every layer [L, N, 2H]."""
  depth = encoder.num_hidden_layers

  @jax.jit
  def run(f, m):
    hidden = wav2vec2.encode_features(encoder, params, f, m, depth)  # [L, B, T, H]
    return heads.stats_pool(hidden, m)

  n = len(feats)
  bs = min(batch_size, n)
  out = []
  for s in range(0, n, bs):
    f, m = feats[s:s + bs], frame_mask[s:s + bs]
    pad = bs - len(f)  # one static batch shape: one compilation
    f = np.pad(f, ((0, pad),) + ((0, 0),) * (f.ndim - 1))
    m = np.pad(m, ((0, pad), (0, 0)), constant_values=True)
    out.append(np.asarray(run(f, m))[:, :bs - pad])
  return np.concatenate(out, axis=1)


def fit_and_score(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                  test_y: np.ndarray, c: float = C, seed: int = 0) -> float:
  """Standardise with the training statistics, fit a multinomial logistic regression, return
  the test accuracy."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel

  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
  clf.fit((train_x - mean) / std, train_y)
  return float(np.mean(clf.predict((test_x - mean) / std) == test_y))


def probe_layers(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, c: float = C) -> dict[str, float]:
  """[L, N, D] pooled features per layer -> {"1": test accuracy, ..., "L": ...}."""
  return {str(i + 1): fit_and_score(train_x[i], train_y, test_x[i], test_y, c)
          for i in range(len(train_x))}


def _training_utterances(config: ml_collections.ConfigDict, corpus: pipeline.Corpus):
  """The utterances the task's clients hold (partition and per-client cap applied), flattened."""
  cd = pipeline.partition_clients(config, corpus.train)
  keep = np.asarray(cd.example_mask, bool)
  smask = np.arange(cd.waveforms.shape[-1]) < np.asarray(cd.lengths)[..., None]
  return cd.waveforms[keep], smask[keep], np.asarray(cd.labels)[keep]


def run_probe(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
  """Probes every layer of config.model.checkpoint on config's task; writes probe.json and
  probe.png into `workdir` and returns the probe.json content."""
  t0 = time.time()
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  task = pipeline.task_of(config)
  if task.head != "pooled":
    raise config_utils.ConfigError(f"fedexit probe fits a classifier on pooled layers; task "
                                   f"{config.task!r} has no utterance classes")
  encoder = config_utils.encoder_config(config)
  corpus = pipeline.load_corpus(config)
  encoder, params, _ = pipeline.init_model(config, encoder, jax.random.PRNGKey(config.seed),
                                           corpus)
  # Base-style (group-norm) models run on zero-padded audio without a mask, as in federated_data.
  use_mask = pipeline.uses_mask(config, encoder)
  data = {}
  for name, (wave, smask, labels) in {
      "train": _training_utterances(config, corpus),
      "test": (corpus.test.waveforms,
               np.arange(corpus.test.waveforms.shape[-1]) < corpus.test.lengths[:, None],
               corpus.test.labels)}.items():
    feats, fmask = models.cache_features(encoder, params, wave, smask if use_mask else None,
                                         batch_size=config.eval_batch_size,
                                         mask_group_norm=task.mask_padding)
    data[name] = (pooled_layers(encoder, params, feats, fmask, config.eval_batch_size),
                  np.asarray(labels, np.int64))
  (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
  acc = probe_layers(train_x, train_y, test_x, test_y)
  best = max(acc, key=lambda k: (acc[k], -int(k)))  # ties: the shallower layer
  result = {"layer": acc, "best_layer": int(best),
            "checkpoint": None if config.model.checkpoint is None else str(config.model.checkpoint),
            "num_train": int(len(train_y)), "num_test": int(len(test_y)),
            "num_classes": int(task.num_outputs(config, corpus)),
            "majority_accuracy": float(np.mean(test_y == np.bincount(train_y).argmax())),
            "classifier": f"standardised stats-pooled features, LogisticRegression(C={C})",
            "seconds": round(time.time() - t0, 1)}
  (workdir / "probe.json").write_text(json.dumps(result, indent=1))
  plot_probe(result, workdir / "probe.png", exits=tuple(config.model.exits))
  return result


def plot_probe(result: dict[str, Any], path: str | Path, exits: tuple[int, ...] = ()) -> Path:
  """Test accuracy (%) per layer, exit layers marked, majority-class accuracy dashed."""
  from fedexit_jax.plots import _save, plt  # pylint: disable=import-outside-toplevel

  layers = sorted(result["layer"], key=int)
  acc = [100 * result["layer"][k] for k in layers]
  fig, ax = plt.subplots(figsize=(6.4, 4.0))
  ax.plot([int(k) for k in layers], acc, marker="o", label="linear probe")
  for e in exits:
    ax.axvline(e, color="gray", lw=0.6, ls=":")
  if "majority_accuracy" in result:
    ax.axhline(100 * result["majority_accuracy"], color="gray", ls="--", lw=1, label="majority")
  ax.set_xlabel("Transformer layer (dotted: exits)")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title(f"linear probe per layer: {result.get('checkpoint')}", fontsize=9)
  ax.set_xticks([int(k) for k in layers])
  ax.legend(loc="lower right")
  return _save(fig, path)
