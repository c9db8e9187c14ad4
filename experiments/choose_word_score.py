"""Chooses ASR's decode.word_score on held-out readers: finished runs' exits are evaluated once on
--config's test set, which serves as the development set (readers that no run trains on nor is
tested on, e.g. the corpus of another data.seed), and read by the lexicon decoder once per word
score of --grid. The score with the lowest lexicon WER, averaged over the runs and their exits,
is the choice; the runs' own test sets are not looked at.

  python experiments/choose_word_score.py --config configs/asr.py --config.data.seed=2 \\
      --runs runs/asr_s0 runs/asr_s1 runs/asr_s2 [--grid -3 -2 -1 0 1]

The lexicon is --config's decode.lexicon ("train": the words of the development corpus's
training transcripts; the same grammar's words as the runs' for the offline corpora). Prints one
JSON line per word score and run (lexicon WER and CER per exit, %), one per word score with the
means, and last {"chosen": W}. Then score the runs on their own test sets with it:
`python experiments/cross_test.py --config configs/asr.py --config.decode.word_score=W --a ...`.
"""
from __future__ import annotations

import json
import sys

import numpy as np

import cross_test  # experiments/, the folder of this script
from fedexit_jax import config_utils, pipeline
from fedexit_jax.tasks import asr


def word_score_table(config, workdirs, grid) -> dict[float, dict[str, dict]]:
  """{word_score: {workdir: {"wer_lexicon": {exit: %}, "cer_lexicon": {exit: %}}}}."""
  table = {float(w): {} for w in grid}
  config_utils.validate_config(config)
  corpus = pipeline.load_corpus(config)
  decoders = {w: asr.lexicon_decoder(config, corpus, word_score=w) for w in table}
  for wd, scored in cross_test.evaluate_runs(config, workdirs, corpus):
    for w in table:
      rates = asr.lexicon_error_rates(decoders[w], corpus.test, scored.ev)
      table[w][str(wd)] = {m: {str(e): 100 * float(v) for e, v in zip(scored.exits, rates[m])}
                           for m in ("wer_lexicon", "cer_lexicon")}
  return table


def mean_wer(per_run: dict[str, dict]) -> float:
  """The lexicon WER averaged over runs and exits."""
  return float(np.mean([v for r in per_run.values() for v in r["wer_lexicon"].values()]))


def choose(table: dict[float, dict[str, dict]]) -> float:
  """The word score of the lowest mean lexicon WER; a tie goes to the score nearest 0 (the
  smaller change to the decoder), then to the lower one."""
  return min(table, key=lambda w: (mean_wer(table[w]), abs(w), w))


def main(argv=None) -> int:
  p, overrides, own = config_utils.script_parser(__doc__, argv)
  p.add_argument("--config", required=True,
                 help="an ASR config with decode.lexicon set, whose test set is the development set")
  p.add_argument("--runs", nargs="+", required=True, help="finished run folders")
  p.add_argument("--grid", nargs="+", type=float, default=[-3.0, -2.0, -1.0, 0.0, 1.0],
                 help="word scores to try")
  args = p.parse_args(own)
  config = config_utils.apply_overrides(config_utils.load_config(args.config), overrides)
  if config.task != "asr":
    p.error(f"an ASR config is needed, got task {config.task!r}")
  if not config.decode.lexicon:
    p.error("decode.lexicon is off in --config: set it (e.g. --config.decode.lexicon=train)")
  try:
    table = word_score_table(config, args.runs, args.grid)
  except (ValueError, FileNotFoundError) as e:
    p.error(str(e))
  for w, per_run in table.items():
    for wd, res in per_run.items():
      print(json.dumps({"word_score": w, "run": wd, **res}), flush=True)
  for w, per_run in table.items():
    exits = next(iter(per_run.values()))["wer_lexicon"]
    print(json.dumps({"word_score": w, "mean_wer_lexicon": round(mean_wer(per_run), 3),
                      "mean_wer_lexicon_per_exit": {
                          e: round(float(np.mean([r["wer_lexicon"][e] for r in per_run.values()])),
                                   3) for e in exits}}), flush=True)
  print(json.dumps({"chosen": choose(table)}), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
