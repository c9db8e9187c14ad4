"""Emotion recognition (the paper's IEMOCAP row): IEMOCAP's folder layout with the SUPERB
4-class mapping (neutral, happy with excited merged in, angry, sad), or the offline stand-in
written in that layout (data.synth_tasks: prosodic styles, stated as a stand-in). Partition by
speaker; the central test set is one held-out session (data.test_session; iemocap.folds gives the
5-fold protocol)."""
from __future__ import annotations

import ml_collections

from fedexit_jax import config_utils
from fedexit_jax.data import iemocap, synth_tasks, utterances
from fedexit_jax.tasks.base import Corpus, Task


def corpus_root(config: ml_collections.ConfigDict):
  d = config.data
  root = config_utils.resolve_data_dir(config)
  if d.source == "synth":
    root = synth_tasks.synthesize_iemocap(root, num_sessions=d.num_sessions,
                                          per_speaker=d.per_speaker, seed=d.seed,
                                          progress=config.progress_bar)
  return root


class Emotion(Task):
  name = "er"

  def load(self, config):
    d = config.data
    root = corpus_root(config)
    data = iemocap.load(root, test_session=d.test_session, max_seconds=d.max_seconds,
                        skip_errors=d.skip_bad_files, progress=config.progress_bar)
    return Corpus(utterances.select(data, "train"), utterances.select(data, "test"), root)

  def num_outputs(self, config, corpus=None) -> int:
    del config, corpus
    return len(iemocap.CLASS_NAMES)
