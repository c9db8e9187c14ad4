"""Keyword spotting (the paper's KWS-12 and KWS-35): Speech Commands v0.02 (folder or tfds), or
the offline eSpeak corpus in its layout (data.synth). Utterance classification by a pooled head.
"""
from __future__ import annotations

import logging
from pathlib import Path

import ml_collections

from fedexit_jax import config_utils
from fedexit_jax.data import speech_commands, synth
from fedexit_jax.tasks.base import Corpus, Task

log = logging.getLogger(__name__)
DataError = speech_commands.DataError


class KeywordSpotting(Task):
  """Classes: data.num_classes (12: ten keywords, _silence_, _unknown_; or 35 words). Partition by
  speaker; the central test set is Speech Commands' testing list (or, offline, held-out
  speakers)."""
  name = "kws"
  mask_padding = False

  def load(self, config: ml_collections.ConfigDict) -> Corpus:
    d = config.data
    root = config_utils.resolve_data_dir(config)
    label_set = str(d.num_classes)
    num_samples = int(round(d.clip_seconds * 16000))
    if d.source == "synth":
      root = synth.synthesize_corpus(root, num_speakers=d.num_speakers, per_word=d.per_word,
                                     unknown_per_speaker=d.unknown_per_speaker, seed=d.seed,
                                     snr_db=tuple(d.snr_db), val_fraction=d.val_fraction,
                                     test_fraction=d.test_fraction,
                                     progress=config.progress_bar)
    if d.source == "tfds":
      from fedexit_jax.data import tfds_builder  # pylint: disable=import-outside-toplevel
      data = tfds_builder.load(root, label_set=label_set)
    else:
      if not Path(root).is_dir():
        raise FileNotFoundError(f"data.dir {str(root)!r} is not a folder; expected an extracted "
                                "Speech Commands v0.02 folder (word/<speaker>_nohash_<n>.wav)")
      data = speech_commands.load_folder(root, label_set=label_set, num_samples=num_samples,
                                         skip_errors=d.skip_bad_files,
                                         silence_fraction=d.silence_fraction, seed=d.seed,
                                         progress=config.progress_bar)
    if data.num_skipped:
      log.warning("skipped %d unreadable audio files in %s", data.num_skipped, root)
    train, test = speech_commands.select(data, "train"), speech_commands.select(data, "test")
    if d.source == "folder" and d.test_dir:  # SUPERB: the separate balanced test archive
      test = speech_commands.load_test_archive(d.test_dir, num_samples,
                                               skip_errors=d.skip_bad_files)
    if len(train.labels) == 0:
      raise DataError(f"the corpus in {root} has no training utterances (no readable "
                      "word/<speaker>_nohash_<n>.wav outside the validation/testing lists)")
    if len(test.labels) == 0:
      raise DataError(f"the corpus in {root} has no test split (testing_list.txt): the central "
                      "test set would be empty")
    return Corpus(train, test, Path(root))

  def num_outputs(self, config, corpus=None) -> int:
    del corpus
    return int(config.data.num_classes)
