"""Words and a small sentence grammar for the synthetic speech corpora (synth_tasks.py).

A closed vocabulary of about 400 plain English words that eSpeak NG pronounces well, so an ASR
model trained on the synthetic LibriSpeech stand-in has a finite, known output space, and the
tests can check every transcript against it. Transcripts use only A-Z, apostrophe and space,
as LibriSpeech's do.
"""
from __future__ import annotations

from typing import List

import numpy as np

DETERMINERS = ("the", "a", "this", "that", "every", "one", "his", "her", "our", "their", "my",
               "your", "some", "no")
ADJECTIVES = tuple("""
old young big small tall short long quiet loud happy sad angry calm brave kind cruel clever
foolish rich poor warm cold hot wet dry dark bright red blue green yellow black white brown grey
golden silver heavy light soft hard sharp gentle strange famous lonely busy lazy early late
empty full broken clean dirty fresh sweet bitter tired hungry proud wild tame narrow wide deep
simple secret ancient noisy shy honest
""".split())
NOUNS = tuple("""
man woman boy girl child king queen farmer doctor teacher sailor soldier baker painter driver
captain stranger neighbour friend mother father brother sister uncle aunt dog cat horse bird fish
wolf fox bear rabbit mouse sheep cow goat lion eagle owl house door window table chair bed room
garden field forest river lake sea hill mountain road bridge village city castle church tower
ship boat train cart wagon letter book paper pen story song picture map key box bag basket
coat hat shoe ring coin bell lamp candle fire stone tree flower apple bread cake cheese milk
water wine rope sword shield clock mirror cup plate knife spoon bottle blanket wheel
storm cloud rain snow wind star moon morning evening night winter summer
""".split())
# (base form, past tense): past tense in plain sentences, the base form after a negation.
VERBS = tuple(tuple(p.split("/")) for p in """
see/saw find/found take/took bring/brought give/gave carry/carried hold/held open/opened
close/closed build/built break/broke buy/bought sell/sold paint/painted clean/cleaned
follow/followed watch/watched meet/met leave/left visit/visited call/called help/helped
lose/lost keep/kept hide/hid show/showed send/sent push/pushed pull/pulled catch/caught
throw/threw cut/cut fix/fixed wash/washed fill/filled drop/dropped lift/lifted move/moved
remember/remembered forget/forgot need/needed want/wanted like/liked love/loved hate/hated
draw/drew read/read write/wrote steal/stole chase/chased feed/fed
""".split())
PREPOSITIONS = ("in", "on", "near", "under", "behind", "beside", "across", "into", "over",
                "through", "with", "without", "after", "before", "at", "by")
ADVERBS = ("again", "today", "yesterday", "quickly", "slowly", "quietly", "carefully", "early",
           "later", "soon", "twice", "once", "suddenly", "gladly", "there", "here", "together",
           "alone", "tonight", "outside")
NEGATIONS = ("didn't", "couldn't", "wouldn't", "won't", "can't")
OPENERS = ("after", "before", "during", "near", "behind", "across")  # "after the storm ..."

VOCABULARY = tuple(sorted(set(DETERMINERS + ("an",) + ADJECTIVES + NOUNS
                              + tuple(w for pair in VERBS for w in pair) + PREPOSITIONS
                              + ADVERBS + NEGATIONS + OPENERS)))
CONTENT_WORDS = tuple(sorted(set(ADJECTIVES + NOUNS + tuple(w for p in VERBS for w in p))))


def _pick(rng: np.random.Generator, words):
  return words[int(rng.integers(len(words)))]


def _noun_phrase(rng: np.random.Generator) -> List[str]:
  words = [_pick(rng, ADJECTIVES)] if rng.random() < 0.6 else []
  words.append(_pick(rng, NOUNS))
  det = _pick(rng, DETERMINERS)
  if det == "a" and words[0][0] in "aeiou":
    det = "an"
  return [det] + words


def sentence(rng: np.random.Generator, short: bool = False) -> str:
  """One lower-case sentence of the grammar (5-9 words when short, otherwise 5-17).

  S -> [OPENER NP] NP VERB_PAST NP [PREP NP] [ADV]  |  NP NEG VERB NP [ADV]
  """
  subject, obj = _noun_phrase(rng), _noun_phrase(rng)
  if rng.random() < 0.25:
    words = subject + [_pick(rng, NEGATIONS), _pick(rng, VERBS)[0]] + obj
  else:
    words = subject + [_pick(rng, VERBS)[1]] + obj
  if not short:
    if rng.random() < 0.4:
      words += [_pick(rng, PREPOSITIONS)] + _noun_phrase(rng)
    if rng.random() < 0.25:
      words = [_pick(rng, OPENERS)] + _noun_phrase(rng) + words
  if rng.random() < 0.3:
    words.append(_pick(rng, ADVERBS))
  return " ".join(words)


def phrase(rng: np.random.Generator, low: int = 2, high: int = 5) -> str:
  """low..high content words drawn independently (VoxCeleb-like free speech, no grammar)."""
  return " ".join(_pick(rng, CONTENT_WORDS) for _ in range(int(rng.integers(low, high + 1))))


def transcript(text: str) -> str:
  """LibriSpeech's style: upper case, single spaces."""
  return " ".join(text.upper().split())
