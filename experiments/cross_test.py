"""Finished runs scored on one test set, paired by seed: runs whose own test sets differ (e.g.
trained on corpora of 100 and 300 readers, each with its own held-out readers) compared on the
same sentences. Each run's newest checkpoint is restored and evaluated on the test set of
--config (which must hold out that set from every run's training data: e.g. the larger
corpus's test readers, which the smaller corpus does not contain).

  python experiments/cross_test.py --config configs/asr.py --config.data.num_speakers=300 \\
      --config.data.test_fraction=0.034 --a runs/n100_s0 runs/n100_s1 runs/n100_s2 \\
      --b runs/n300_s0 runs/n300_s1 runs/n300_s2

Prints one JSON line per run (its round and the task's metrics per exit, %, as the run reports
them: with ASR's decode.lexicon also the lexicon-decoded ones) and, for each
metric and exit, the paired difference b - a over the seeds (mean, 95% t interval, p-value).
The runs must share --config's model (backbone, exits, heads); another is a clear error. Each
run's model is built as the run built it (from its saved seed), so a run scored on its own
config's test set gets its own final metrics back.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NamedTuple

import jax

from fedexit_jax import checkpoint, config_utils, models, pipeline, stats, train
from fedexit_jax import federated as fl
from fedexit_jax.federated import trees


def run_seed(workdir) -> int:
  """The seed a run was made with (its saved config): it drew the backbone's initial weights,
  and with no checkpoint to start from (model.checkpoint=None) also the frozen CNN's, which the
  run's checkpoints do not hold."""
  path = Path(workdir) / checkpoint.CONFIG_FILE
  try:
    return int(json.loads(path.read_text())["seed"])
  except (OSError, ValueError, KeyError) as e:
    raise ValueError(f"{workdir}: not a run folder ({path}: {e})") from None


class Scored(NamedTuple):
  round: int  # the checkpoint's
  exits: tuple[int, ...]  # the trained exits, in the order of the evaluation's rows
  ev: dict  # fl.evaluate's outputs on config's test set
  scores: dict  # the task's metrics {name: [n]} (fractions), as the run reports them


def evaluate_runs(config, workdirs, corpus=None):
  """(workdir, Scored) per run, each run's newest checkpoint evaluated on config's test set
  (corpus: config's, if already loaded)."""
  encoder = config_utils.validate_config(config)
  corpus = pipeline.load_corpus(config) if corpus is None else corpus
  task = pipeline.task_of(config)
  depths = tuple(sorted({t["max_depth"] for t in config.tiers}))
  for wd in workdirs:
    # as train.Simulation builds the model: the same frozen CNN, so the same features
    rng_model, rng_server = jax.random.split(jax.random.key(run_seed(wd)))
    enc, mp, hp = pipeline.init_model(config, encoder, rng_model, corpus)
    params, frozen = models.split_params(mp, hp)
    data = pipeline.federated_data(config, enc, frozen, corpus)
    spec = pipeline.round_spec(config, enc, depths)
    exits = trees.trained_exits(config.model.exits, depths, spec.client.deepest_only)
    like = fl.init_server_state(params, spec.server_optimizer, rng_server)
    try:
      restored = checkpoint.restore_latest(wd, like)
    except Exception as e:  # pylint: disable=broad-except  # orbax names the tree mismatch
      raise ValueError(f"{wd}: its checkpoint is not this config's model ({e})") from None
    if restored is None:
      raise ValueError(f"{wd}: no checkpoint")
    state, step = restored
    ev, scores = train.evaluate_exits(config, task, enc, state.params, frozen, data, corpus,
                                      spec, exits)
    yield wd, Scored(int(step), tuple(exits), ev, scores)


def score_runs(config, workdirs) -> dict[str, dict]:
  """{workdir: {"round": r, metric: {exit: %}}} on config's test set."""
  return {str(wd): {"round": s.round,
                    **{m: {str(e): 100 * float(v) for e, v in zip(s.exits, vals)}
                       for m, vals in s.scores.items()}}
          for wd, s in evaluate_runs(config, workdirs)}


def paired(results: dict, a, b) -> list[dict]:
  """b - a per metric and exit, paired by position (seed)."""
  rows = []
  first = results[str(a[0])]
  for m, per_exit in first.items():
    if m == "round":
      continue
    for e in per_exit:
      p = stats.paired_difference([results[str(w)][m][e] for w in b],
                                  [results[str(w)][m][e] for w in a])
      rows.append({"metric": m, "exit": e, "b_minus_a": p.diff.mean, "low": p.diff.low,
                   "high": p.diff.high, "p_value": p.p_value, "verdict": stats.verdict(p)})
  return rows


def main(argv=None) -> int:
  p, overrides, own = config_utils.script_parser(__doc__, argv)
  p.add_argument("--config", required=True, help="the config whose test set scores every run")
  p.add_argument("--a", nargs="+", required=True, help="run folders, one per seed")
  p.add_argument("--b", nargs="+", default=[], help="run folders, the same seeds in order")
  args = p.parse_args(own)
  if args.b and len(args.b) != len(args.a):
    p.error(f"--a has {len(args.a)} runs and --b {len(args.b)}: pair the same seeds")
  config = config_utils.apply_overrides(config_utils.load_config(args.config), overrides)
  try:
    results = score_runs(config, args.a + args.b)
  except ValueError as e:
    p.error(str(e))
  for wd, res in results.items():
    print(json.dumps({"run": wd, **res}), flush=True)
  if args.b:
    for row in paired(results, args.a, args.b):
      print(json.dumps(row), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
