"""Lexicon-constrained CTC beam search (flashlight-text's LexiconDecoder) on frames whose best
reading is worked out by hand, the ASR task's lexicon metrics, and its clear errors."""
import numpy as np
import pytest

from fedexit_jax import config_utils, ctc_lexicon
from fedexit_jax.data import librispeech
from fedexit_jax.tasks import asr
from fedexit_jax.tasks.base import Corpus
from tests.test_tasks import _utts

VOCAB = ("_", " ", "a", "b")  # 0 blank, 1 word separator
FLOOR = 1e-6  # the probability of every symbol a frame does not name


def _frames(*probs: dict) -> np.ndarray:
  """Log-probabilities [T, 4] of frames given as {symbol: probability}, the rest FLOOR each."""
  out = np.full((len(probs), len(VOCAB)), FLOOR)
  for t, p in enumerate(probs):
    for sym, v in p.items():
      out[t, VOCAB.index(sym)] = v
  return np.log(out / out.sum(axis=1, keepdims=True))


def test_a_misspelt_greedy_reading_becomes_the_word_its_frames_support_best():
  # greedy reads "a a" -> "a", not a word. "ab" needs (a, b): 0.6 * 0.45 = 0.27;
  # "ba" needs (b, a): 0.4 * 0.55 = 0.22. The best word is "ab", at the log of 0.27.
  lp = _frames({"a": 0.6, "b": 0.4}, {"a": 0.55, "b": 0.45})
  words, score = ctc_lexicon.LexiconDecoder(["ab", "ba"], VOCAB).best(lp)
  assert words == ["ab"]
  np.testing.assert_allclose(score, lp[0, 2] + lp[1, 3], rtol=1e-5)


def test_words_are_read_between_separators():
  dec = ctc_lexicon.LexiconDecoder(["ab", "ba"], VOCAB)
  a, b, blank, sep = {"a": 1.0}, {"b": 1.0}, {"_": 1.0}, {" ": 1.0}
  floor = np.log(FLOOR / (1 + 3 * FLOOR))  # a symbol a frame does not name
  words, score = dec.best(_frames(a, b, sep, b, a))
  assert words == ["ab", "ba"] and score > floor / 100  # every frame read as it says
  # no separator between the words: one is read where the frame says blank, at its cost
  words, score = dec.best(_frames(a, b, blank, b, a))
  assert words == ["ab", "ba"]
  np.testing.assert_allclose(score, floor, rtol=1e-4)
  lp = np.stack([_frames(a, b, sep, b, a), _frames(b, a, blank, blank, blank)])
  assert dec.transcripts(lp, np.array([5, 2])) == ["ab ba", "ba"]
  assert dec.best(np.zeros((0, 4)))[0] == []


def test_word_score_decides_between_one_word_and_two():
  # frames a, (blank or separator, even), b: "ab" reads a, blank, b and "a" + "b" reads a,
  # separator, b: the same acoustic score (log 0.5); the word score added per word breaks the
  # tie either way.
  lp = _frames({"a": 1.0}, {"_": 0.5, " ": 0.5}, {"b": 1.0})
  words = ["a", "ab", "b"]
  for word_score, best in ((1.0, ["a", "b"]), (-1.0, ["ab"])):
    got, score = ctc_lexicon.LexiconDecoder(words, VOCAB, word_score=word_score).best(lp)
    assert got == best
    np.testing.assert_allclose(score, np.log(0.5) + word_score * len(best), atol=1e-4)


def test_reading_is_exact_ctc_at_a_words_last_letter():
  """A held last letter is one letter; a doubled one needs a blank between its frames (CTC's
  rule, which flashlight's plain lexicon breaks at a word's last symbol: module docstring)."""
  a, b, blank = {"a": 1.0}, {"b": 1.0}, {"_": 1.0}
  dec = ctc_lexicon.LexiconDecoder(["ab", "abb"], VOCAB)
  words, score = dec.best(_frames(a, b, b))
  assert words == ["ab"] and score > -1e-4  # b held over two frames, at no cost
  words, score = dec.best(_frames(a, b, blank, b))
  assert words == ["abb"] and score > -1e-4


def test_the_same_log_probs_decode_the_same_way_with_every_decoder():
  """Equal-score readings are what flashlight orders by memory address; words read between
  separators leave none, so fresh decoders (fresh tries at other addresses) agree."""
  rng = np.random.default_rng(0)
  words = ["a", "ab", "ba", "b", "aa", "bb", "aba", "bab"]
  lp = np.log(rng.dirichlet(np.full(len(VOCAB), 0.3), size=(40, 30)))
  lengths = rng.integers(10, 31, size=40)
  first = ctc_lexicon.LexiconDecoder(words, VOCAB, beam_size=4).transcripts(lp, lengths)
  for _ in range(5):
    assert ctc_lexicon.LexiconDecoder(words, VOCAB, beam_size=4).transcripts(lp, lengths) == first


def test_bad_lexicons_and_log_probs_are_named():
  with pytest.raises(ValueError, match="word 'ac' has symbols outside the vocabulary"):
    ctc_lexicon.LexiconDecoder(["ab", "ac"], VOCAB)
  with pytest.raises(ValueError, match="the lexicon is empty"):
    ctc_lexicon.LexiconDecoder([], VOCAB)
  with pytest.raises(ValueError, match="beam_size must be at least 1"):
    ctc_lexicon.LexiconDecoder(["ab"], VOCAB, beam_size=0)
  dec = ctc_lexicon.LexiconDecoder(["ab"], VOCAB)
  with pytest.raises(ValueError, match=r"must be \[frames, 4\]"):
    dec.best(np.zeros((3, 5)))
  with pytest.raises(ValueError, match="NaN"):
    dec.best(np.full((3, 4), np.nan))


def test_word_lists_read_the_first_field_of_each_line(tmp_path):
  path = tmp_path / "lexicon.txt"
  path.write_text("HELLO HH AH L OW\nworld\n\nHello HH EH L OW\n")
  assert ctc_lexicon.read_word_list(path) == ["hello", "world"]
  (tmp_path / "empty.txt").write_text("\n")
  with pytest.raises(ValueError, match="lists no words"):
    ctc_lexicon.read_word_list(tmp_path / "empty.txt")
  with pytest.raises(FileNotFoundError, match="no such file"):
    ctc_lexicon.read_word_list(tmp_path / "missing.txt")
  assert ctc_lexicon.training_words(["the cat", "a cat"]) == ["a", "cat", "the"]


def test_asr_reports_lexicon_error_rates_beside_the_greedy_ones():
  ids = {c: i for i, c in enumerate(librispeech.VOCAB)}
  train = _utts(["ab ba"], ["train-clean-100"], [5])
  test = _utts(["ab", "ba"], ["test-clean"] * 2, [5, 5])
  # utterance 0 greedily "a" (a, a): a near miss of "ab" (0.6 * 0.45 against "ba"'s 0.4 * 0.55);
  # utterance 1 "ba", right either way
  lp = np.full((1, 2, 2, len(ids)), FLOOR)
  lp[0, 0, 0, [ids["a"], ids["b"]]] = 0.6, 0.4
  lp[0, 0, 1, [ids["a"], ids["b"]]] = 0.55, 0.45
  lp[0, 1, 0, ids["b"]] = lp[0, 1, 1, ids["a"]] = 1.0
  lp = np.log(lp / lp.sum(-1, keepdims=True))
  ev = {"best_path": np.array([[[ids["a"], ids["a"]], [ids["b"], ids["a"]]]]), "log_probs": lp}
  config = config_utils.load_config(config_utils.configs_dir() / "asr.py")
  task = asr.SpeechRecognition()
  greedy = task.metrics(ev, test)
  np.testing.assert_allclose(greedy["wer"], [0.5])  # "a" for "ab": 1 word of 2
  np.testing.assert_allclose(greedy["cer"], [0.25])  # "b" missing: 1 character of 4
  got = task.extra_metrics(config, None, None, None, (3,), Corpus(train, test, None), ev)
  np.testing.assert_allclose(got["wer_lexicon"], [0.0], atol=1e-12)
  np.testing.assert_allclose(got["cer_lexicon"], [0.0], atol=1e-12)
  assert task.objective_for(config).keep_log_probs
  config.decode.lexicon = ""
  assert task.extra_metrics(config, None, None, None, (3,), Corpus(train, test, None), ev) == {}
  assert not task.objective_for(config).keep_log_probs


def test_lexicon_decoding_is_refused_for_other_tasks():
  config = config_utils.load_config(config_utils.configs_dir() / "default.py")
  config.decode.lexicon = "train"
  with pytest.raises(config_utils.ConfigError, match="only task asr has them, not 'kws'"):
    config_utils.validate_config(config)
  config.decode.lexicon, config.decode.beam_size = "", 0
  with pytest.raises(config_utils.ConfigError, match="decode.beam_size must be a whole number"):
    config_utils.validate_config(config)
