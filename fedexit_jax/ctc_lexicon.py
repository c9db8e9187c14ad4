"""Lexicon-constrained CTC beam search without a language model: flashlight-text's
LexiconDecoder (the decoder behind torchaudio's `ctc_decoder` and fairseq's lexicon decoding),
with its ZeroLM. Every hypothesis spells words of a lexicon, so a near miss of greedy decoding
("cleen") becomes the word whose spelling the frames support best ("clean").

It is a second reading of the same CTC heads, not the paper's metric: the paper (and the ASR
task's "wer"/"cer") decode greedily. The score of a hypothesis is its best alignment's summed
frame log-probability (Viterbi, `log_add=False`) plus `word_score` per word (an insertion bonus
or penalty).

Every word is spelled with the word separator (space) after it, as CTC's training targets spell
a transcript, and one frame that emits only the separator is appended to each utterance so that
its last word ends too. Words are therefore read between separators, which makes two things
hold that flashlight's plain lexicon does not give:
- the reading is exact CTC: a word's last letter may be held over several frames, and a doubled
  letter needs a blank between its two frames (flashlight ends a word on the first frame of its
  last symbol, which CTC does not);
- the same log-probs decode the same way every time. With the separator optional, one token
  path can be cut into words in several ways with equal scores, and flashlight orders equal
  hypotheses by memory address when it merges and prunes its beam, so two decoders of one
  lexicon disagreed on 1 of 300 test sentences, their best hypotheses 8.7 apart in
  log-probability (measured 2026-12-02 on an asr_long model; read between separators, fresh
  decoders have agreed on every sentence since).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

_WORD = re.compile(r"\S+")
_NEVER = -1e9  # the log-probability of the symbols the appended end frame does not emit


def training_words(texts: Iterable[str]) -> list[str]:
  """The distinct words of transcripts, sorted."""
  return sorted({w for t in texts for w in _WORD.findall(str(t))})


def read_word_list(path) -> list[str]:
  """Words of a file, one per line: the first field of each non-empty line, lowercased (so a
  pronunciation lexicon such as LibriSpeech's `librispeech-lexicon.txt` serves as is)."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"lexicon {path}: no such file")
  words = {line.split()[0].lower() for line in path.read_text(encoding="utf-8").splitlines()
           if line.strip()}
  if not words:
    raise ValueError(f"lexicon {path} lists no words")
  return sorted(words)


class LexiconDecoder:
  """Decodes frame log-probabilities [T, V] into words of `words`.

  vocab: the CTC symbols by id (vocab[blank] is the blank, vocab[separator] the word
  separator); every word must be spelled in the other symbols. beam_size: hypotheses kept per
  frame and beam_threshold: the score margin under the best beyond which one is dropped
  (torchaudio's defaults, 50 and 50; larger is slower and rarely changes the result).
  """

  def __init__(self, words: Sequence[str], vocab: Sequence[str], blank: int = 0,
               separator: int = 1, beam_size: int = 50, word_score: float = 0.0,
               beam_threshold: float = 50.0):
    # Imported here: only lexicon decoding needs the compiled extension.
    from flashlight.lib.text import decoder as fl  # pylint: disable=import-outside-toplevel
    words = list(words)
    if not words:
      raise ValueError("lexicon decoding: the lexicon is empty")
    if beam_size < 1:
      raise ValueError(f"lexicon decoding: beam_size must be at least 1, got {beam_size}")
    ids = {c: i for i, c in enumerate(vocab) if i not in (blank, separator)}
    self.words, self.vocab_size, self.separator = words, len(vocab), separator
    self._lm = fl.ZeroLM()
    self._trie = fl.Trie(len(vocab), separator)
    for w_id, w in enumerate(words):
      bad = sorted({c for c in w if c not in ids})
      if bad or not w:
        raise ValueError(f"lexicon decoding: word {w!r} has symbols outside the vocabulary "
                         f"({bad if w else 'it is empty'})")
      self._trie.insert([ids[c] for c in w] + [separator], w_id, 0.0)  # read up to a separator
    self._trie.smear(fl.SmearingMode.MAX)
    options = fl.LexiconDecoderOptions(
        beam_size=int(beam_size), beam_size_token=len(vocab), beam_threshold=float(beam_threshold), lm_weight=0.0,
        word_score=float(word_score), unk_score=float("-inf"), sil_score=0.0, log_add=False,
        criterion_type=fl.CriterionType.CTC)
    self._decoder = fl.LexiconDecoder(options, self._trie, self._lm, separator, blank, -1, [],
                                      False)

  def best(self, log_probs: np.ndarray) -> tuple[list[str], float]:
    """(words, score) of the best hypothesis of one utterance's valid frames [T, V]."""
    em = np.ascontiguousarray(log_probs, dtype=np.float32)
    if em.ndim != 2 or em.shape[1] != self.vocab_size:
      raise ValueError(f"lexicon decoding: log-probs must be [frames, {self.vocab_size}], got "
                       f"{em.shape}")
    if em.shape[0] == 0:
      return [], 0.0
    if not np.isfinite(em).all():
      raise ValueError("lexicon decoding: the log-probs hold NaN or +-inf (a diverged model?)")
    end = np.full((1, self.vocab_size), _NEVER, np.float32)  # the frame that ends the last word
    end[0, self.separator] = 0.0
    em = np.ascontiguousarray(np.concatenate([em, end]))
    result = self._decoder.decode(em.ctypes.data, em.shape[0], em.shape[1])[0]
    return [self.words[i] for i in result.words if i >= 0], float(result.score)

  def transcripts(self, log_probs: np.ndarray, lengths: np.ndarray) -> list[str]:
    """Space-joined words per utterance of log_probs [M, T, V], frames past lengths[m] unread."""
    return [" ".join(self.best(lp[:int(n)])[0]) for lp, n in zip(log_probs, lengths)]
