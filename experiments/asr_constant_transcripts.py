"""The WER and CER that a model which ignores the audio gets: the same transcript for every test
utterance. The floor an ASR run has to beat is this, not the empty transcript's 100%: on a
small grammar, frequent short words repeated match many characters.

  python experiments/asr_constant_transcripts.py --config configs/asr.py [--config.X=Y ...]

Candidates: the empty transcript; the commonest training word repeated 1-12 times; every
training transcript. For each rule ("best repetition", "best training sentence") the candidate
is chosen on a sample of the training transcripts (never on the test set), then scored on the
test set. Prints one JSON line per candidate kept: what, wer and cer (fractions, jiwer).
"""
from __future__ import annotations

import collections
import json
import sys

import numpy as np

from fedexit_jax import config_utils, pipeline, scoring


def constant_baselines(train_texts, test_texts, sample: int = 300, seed: int = 0):
  """[(what, transcript, test wer, test cer)] for the empty transcript, the best repetition of
  the commonest word and the best training sentence (chosen on `sample` training texts)."""
  train = [str(t) for t in train_texts]
  test = [str(t) for t in test_texts]
  rng = np.random.default_rng(seed)
  pick = [train[i] for i in rng.choice(len(train), min(sample, len(train)), replace=False)]
  word = collections.Counter(w for t in train for w in t.split()).most_common(1)[0][0]
  reps = [" ".join([word] * k) for k in range(1, 13)]
  out = [("empty", "")]
  for what, cands, rate in (("commonest word repeated, best CER on training", reps, scoring.cer),
                            ("commonest word repeated, best WER on training", reps, scoring.wer),
                            ("training sentence, best WER on training", sorted(set(train)),
                             scoring.wer)):
    best = min(cands, key=lambda c: (rate(pick, [c] * len(pick)), c))
    out.append((what, best))
  return [(what, c, scoring.wer(test, [c] * len(test)), scoring.cer(test, [c] * len(test)))
          for what, c in out]


def main(argv=None) -> int:
  p, overrides, own = config_utils.script_parser(__doc__, argv)
  p.add_argument("--config", default="configs/asr.py")
  p.add_argument("--sample", type=int, default=300,
                 help="training transcripts the candidates are chosen on")
  args = p.parse_args(own)
  config = config_utils.apply_overrides(config_utils.load_config(args.config), overrides)
  if config.task != "asr":
    p.error(f"an ASR config is needed, got task {config.task!r}")
  config_utils.validate_config(config)
  corpus = pipeline.load_corpus(config)
  for what, text, w, c in constant_baselines(corpus.train.texts, corpus.test.texts, args.sample,
                                             config.seed):
    print(json.dumps({"what": what, "transcript": text, "wer": round(w, 4), "cer": round(c, 4)}),
          flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
