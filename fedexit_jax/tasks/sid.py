"""Speaker identification, and speaker verification scored from its embeddings (the paper's
VoxCeleb1 rows): VoxCeleb1's folder (`wav/idXXXXX/<video>/<n>.wav`, `iden_split.txt`,
`veri_test2.txt`), or the offline stand-in written in that layout (data.synth_tasks).

Identification: classify the speaker of an utterance (pooled head over the identification
speakers); the clients hold the training part of every speaker's utterances (the official IID
split: iden_split 1 and 2), the central test set is the rest (3). Verification: the EER of
cosine similarity between the exit's pooled embedding (statistics pooling of that layer, the
input of its head) of the two utterances of each trial. The trial speakers are never clients'
classes: real VoxCeleb1's iden_split.txt lists every speaker, the 40 test speakers of the trial
lists included, so their rows are left out of identification (the offline corpus keeps them
apart already), and no client has heard a verification speaker.
"""
from __future__ import annotations

import functools

import jax
import ml_collections
import numpy as np

from fedexit_jax import config_utils, models, scoring
from fedexit_jax.data import synth_tasks, utterances, voxceleb
from fedexit_jax.models import heads, wav2vec2
from fedexit_jax.tasks.base import Corpus, Task


def corpus_root(config: ml_collections.ConfigDict):
  """The VoxCeleb1-layout folder: data.dir, or the offline corpus (generated once, cached)."""
  d = config.data
  root = config_utils.resolve_data_dir(config)
  if d.source == "synth":
    root = synth_tasks.synthesize_voxceleb(
        root, num_speakers=d.num_speakers, per_speaker=d.per_speaker,
        verification_speakers=d.verify_speakers, num_trials=d.num_trials, seed=d.seed,
        test_fraction=d.test_fraction, snr_db=tuple(d.snr_db), progress=config.progress_bar)
  return root


class SpeakerId(Task):
  name = "sid"

  def load(self, config):
    d = config.data
    root = corpus_root(config)
    data = voxceleb.load_identification(root, max_seconds=d.max_seconds,
                                        skip_errors=d.skip_bad_files,
                                        progress=config.progress_bar)
    verify = voxceleb.load_verification(root, trials_file=d.trials_file,
                                        max_seconds=d.max_seconds, skip_errors=d.skip_bad_files,
                                        progress=config.progress_bar)
    data = without_speakers(data, set(verify[0].speakers.tolist()))
    return Corpus(utterances.select(data, "train"), utterances.select(data, "test"), root,
                  {"verify": verify})

  def num_outputs(self, config, corpus=None) -> int:
    if corpus is None:
      raise ValueError("speaker id: the number of classes (speakers) comes from the corpus")
    return len(corpus.train.class_names)

  def extra_metrics(self, config, encoder, params, frozen, exits, corpus, ev):
    """{"eer": [n]}: verification EER at each evaluated exit. With a frozen CNN the trial
    utterances' conv features are computed once per run (kept on this task object)."""
    del ev
    utts, trials = corpus.extra["verify"]
    frozen_cnn = "feature_extractor" in frozen
    feats = getattr(self, "_verify_features", None) if frozen_cnn else None
    if feats is None:
      feats = verify_features(encoder, frozen if frozen_cnn else params["backbone"],
                              utts.waveforms, utts.lengths, config.eval_batch_size)
      if frozen_cnn:
        self._verify_features = feats  # pylint: disable=attribute-defined-outside-init
    emb = exit_embeddings(encoder, params, *feats, exits, config.eval_batch_size)
    return {"eer": np.array([scoring.eer(scoring.cosine_scores(e, trials.idx_a, trials.idx_b),
                                         trials.same)[0] for e in emb])}


def without_speakers(data: utterances.Utterances, speakers: set) -> utterances.Utterances:
  """The rows of other speakers, classes renumbered over the speakers that remain."""
  keep = np.flatnonzero(~np.isin(data.speakers, sorted(speakers)))
  out = utterances.take(data, keep)
  names = tuple(sorted(set(out.speakers.tolist())))
  index = {s: i for i, s in enumerate(names)}
  return out._replace(labels=np.asarray([index[s] for s in out.speakers], np.int32),
                      class_names=names)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _pooled(encoder, backbone, feats, fmask, exits):
  hidden = wav2vec2.encode_features(encoder, backbone, feats, fmask, max(exits))
  return heads.stats_pool(hidden[np.asarray(exits) - 1], fmask)  # [n, B, 2H]


def verify_features(encoder, fe, waveforms, lengths, batch_size: int):
  """(conv features [U, T, C], frame masks [U, T]) of the trial utterances; `fe` holds
  "feature_extractor" (the frozen part, or the backbone when the CNN is trained)."""
  smask = np.arange(waveforms.shape[1])[None] < np.asarray(lengths)[:, None]
  return models.cache_features(encoder, fe, waveforms, smask, batch_size=batch_size,
                               mask_group_norm=True)


def exit_embeddings(encoder, params, feats, fmask, exits, batch_size: int) -> np.ndarray:
  """[n, U, 2H]: statistics pooling of each exit's layer over the utterance's valid frames."""
  out = []
  exits = tuple(int(e) for e in exits)
  for s in range(0, len(feats), batch_size):
    f, m = feats[s:s + batch_size], fmask[s:s + batch_size]
    pad = batch_size - len(f)
    if pad and len(feats) > batch_size:  # one compiled shape for every batch
      f = np.pad(f, ((0, pad), (0, 0), (0, 0)))
      m = np.pad(m, ((0, pad), (0, 0)))
    out.append(np.asarray(_pooled(encoder, params["backbone"], f, m, exits))[:, :batch_size - pad
                                                                             if pad else None])
  return np.concatenate(out, axis=1)
