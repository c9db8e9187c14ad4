"""Speech recognition with CTC (the paper's LibriSpeech rows): LibriSpeech's layout
(`<split>/<spk>/<chapter>/<spk>-<chapter>-<n>.flac` + `.trans.txt`), or the offline stand-in
written in it (data.synth_tasks: sentences from a small grammar). Partition by speaker; the test
speakers are held out (test-clean, optionally test-other).

Training utterances longer than data.max_seconds are left out (a cut one's transcript would be
wrong; ASR recipes filter by length too); the test set is whole. Every utterance is padded to
its set's longest and lives in memory as cached conv features, which suits the offline corpus
and small subsets; all of train-clean-100 (100 h, up to 35 s) needs a large host.

Head: per-frame (heads "frames": a temporal conv, then linear) over the 29-symbol character
vocabulary (blank, space, apostrophe, a-z); CTC loss (optax); greedy decoding; WER and CER
(jiwer), lower is better. Labels are the token ids of the transcript, padded with the blank.
With `decode.lexicon`, the same heads are also read by a lexicon-constrained beam search
(ctc_lexicon): "wer_lexicon" and "cer_lexicon". Its "train" lexicon is the words of the clients'
transcripts: a simulation's shortcut (a deployed server would not see them; it would take a
public word list, which a file lexicon stands for).
"""
from __future__ import annotations

import dataclasses
import logging

import ml_collections
import numpy as np

from fedexit_jax import config_utils, ctc_lexicon, scoring
from fedexit_jax import federated as fl
from fedexit_jax.data import librispeech, synth_tasks, utterances
from fedexit_jax.tasks.base import Corpus, Task

log = logging.getLogger(__name__)


def corpus_root(config: ml_collections.ConfigDict):
  d = config.data
  root = config_utils.resolve_data_dir(config)
  if d.source == "synth":
    root = synth_tasks.synthesize_librispeech(root, num_speakers=d.num_speakers,
                                              per_speaker=d.per_speaker, seed=d.seed,
                                              test_fraction=d.test_fraction,
                                              progress=config.progress_bar)
  return root


TEST_MAX_SECONDS = 40.0


def _whole(data: utterances.Utterances, max_seconds: float) -> utterances.Utterances:
  """The utterances not cut at max_seconds: a cut one's transcript no longer matches its audio,
  so it is left out (logged), as ASR recipes filter by length."""
  keep = np.flatnonzero(data.lengths < int(round(max_seconds * 16000)))
  if len(keep) < len(data.lengths):
    log.warning("asr: left out %d of %d utterances longer than data.max_seconds=%s",
                len(data.lengths) - len(keep), len(data.lengths), max_seconds)
  if len(keep) == 0:
    raise librispeech.DataError(f"asr: every utterance is longer than data.max_seconds="
                                f"{max_seconds}; raise it")
  out = utterances.take(data, keep)
  return out._replace(waveforms=out.waveforms[:, :int(out.lengths.max())])


def _error_rates(test, hyps_per_exit, suffix: str = "") -> dict[str, np.ndarray]:
  """{"wer" + suffix: [n], "cer" + suffix: [n]} of the exits' transcripts of the test set; with
  several test splits (test-clean and test-other) also one pair per split ("wer_test_clean")."""
  refs = np.array([str(t) for t in test.texts], dtype=object)
  groups = {"": np.ones(len(refs), bool)}
  splits = sorted(set(test.splits.tolist()))
  if len(splits) > 1:
    groups.update({"_" + s.replace("-", "_"): test.splits == s for s in splits})
  out = {f"{m}{suffix}{g}": [] for g in groups for m in ("wer", "cer")}
  for hyps in hyps_per_exit:
    hyps = np.array(hyps, dtype=object)
    for g, sel in groups.items():
      out[f"wer{suffix}{g}"].append(scoring.wer(list(refs[sel]), list(hyps[sel])))
      out[f"cer{suffix}{g}"].append(scoring.cer(list(refs[sel]), list(hyps[sel])))
  return {k: np.array(v) for k, v in out.items()}


def lexicon_decoder(config, corpus, word_score: float | None = None) -> ctc_lexicon.LexiconDecoder:
  """decode.lexicon's decoder ("train": the words of corpus.train's transcripts; else a word-list
  file), with decode.beam_size and decode.word_score (or `word_score`)."""
  d = config.decode
  words = (ctc_lexicon.training_words(corpus.train.texts) if d.lexicon == "train"
           else ctc_lexicon.read_word_list(d.lexicon))
  return ctc_lexicon.LexiconDecoder(
      words, librispeech.VOCAB, blank=0, separator=librispeech.VOCAB.index(" "),
      beam_size=d.beam_size, word_score=d.word_score if word_score is None else word_score)


def lexicon_error_rates(decoder: ctc_lexicon.LexiconDecoder, test, ev) -> dict[str, np.ndarray]:
  """{"wer_lexicon": [n], "cer_lexicon": [n]} (and per test split) of the evaluation's exits
  (ev from fl.evaluate with the objective's keep_log_probs) read by `decoder`."""
  lengths = (ev["best_path"][0] >= 0).sum(axis=-1)
  return _error_rates(test, [decoder.transcripts(lp, lengths) for lp in ev["log_probs"]],
                      suffix="_lexicon")


class SpeechRecognition(Task):
  name = "asr"
  head = "frames"
  objective = fl.CTC(blank=0)
  primary = "wer"

  def load(self, config):
    d = config.data
    root = corpus_root(config)
    train_splits = ("train-clean-100",) if d.source == "synth" else tuple(d.train_splits)
    test_splits = ("test-clean",) if d.source == "synth" else tuple(d.test_splits)
    kw = dict(skip_errors=d.skip_bad_files, progress=config.progress_bar)
    train = _whole(librispeech.load(root, splits=train_splits, max_seconds=d.max_seconds, **kw),
                   d.max_seconds)
    # The test set is never filtered nor cut: padded to its longest utterance (LibriSpeech's
    # test sets stay under 35 s); one at the cap would have been cut, so it is an error.
    test = librispeech.load(root, splits=test_splits, max_seconds=TEST_MAX_SECONDS, **kw)
    if np.any(test.lengths >= int(TEST_MAX_SECONDS * 16000)):
      raise librispeech.DataError(f"asr: a test utterance in {root} is {TEST_MAX_SECONDS} s or "
                                  "longer; it would be cut and scored against its whole text")
    return Corpus(train, test, root)

  def num_outputs(self, config, corpus=None) -> int:
    del config, corpus
    return len(librispeech.VOCAB)

  def objective_for(self, config):
    return dataclasses.replace(self.objective, keep_log_probs=bool(config.decode.lexicon))

  def labels(self, part) -> np.ndarray:
    """Token ids [U, L] of the transcripts, padded with the blank (0), L the longest."""
    ids = [librispeech.text_to_ids(t) for t in part.texts]
    out = np.zeros((len(ids), max([len(i) for i in ids] + [1])), np.int32)
    for r, i in enumerate(ids):
      out[r, :len(i)] = i
    return out

  def metrics(self, ev, test):
    """WER and CER of the greedy CTC transcripts per exit (per test split with several)."""
    return _error_rates(test, [[librispeech.ids_to_text(h)
                                for h in scoring.ctc_greedy_decode(path, path >= 0)]
                               for path in ev["best_path"]])  # [M, T] per exit, -1 padded

  def extra_metrics(self, config, encoder, params, frozen, exits, corpus, ev):
    """{"wer_lexicon": [n], "cer_lexicon": [n]} with decode.lexicon set (else {}): each exit's
    log-probs read by the lexicon-constrained beam search (the decoder is built once per run)."""
    del encoder, params, frozen, exits
    if not config.decode.lexicon:
      return {}
    key = (config.decode.lexicon, config.decode.beam_size, config.decode.word_score,
           id(corpus.train))
    if getattr(self, "_lexicon_key", None) != key:
      # pylint: disable=attribute-defined-outside-init
      self._lexicon = lexicon_decoder(config, corpus)
      self._lexicon_key = key
    return lexicon_error_rates(self._lexicon, corpus.test, ev)

  def chance(self, config, corpus):
    return 1.0  # no words right
