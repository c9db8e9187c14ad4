"""One exit trained centrally on every client's data pooled: how far the task's head and backbone
get with plain steps, no federation. A diagnostic for a task that learns slowly (e.g. ASR): it
separates "too few steps" from "does not generalise to new speakers", which a federated run
cannot, and is cheap (the frozen CNN's features are cached once, as in a run).

  python experiments/central_exit.py --config configs/asr.py --depth 3 --steps 3000 \
      --learning-rate 2e-3 --every 500 [--config.model.checkpoint=builtin:small_ssl_hubert]

Prints one JSON line per evaluation: step, mean training loss over the last `--every` steps, the
task's metrics at the exit (e.g. wer / cer, fractions) and seconds since the first step.
Batches are drawn uniformly from the pooled training utterances (seeded by config.seed); the
config's client optimizer (Adam by default; the heads at --head-learning-rate if given), one
state for the whole run, no federation, no server.
"""
from __future__ import annotations

import json
import sys
import time

import jax
import numpy as np
import optax

from fedexit_jax import config_utils, models, pipeline
from fedexit_jax import federated as fl


def train_exit(config, depth: int, steps: int, learning_rate: float, head_learning_rate=None,
               batch_size: int = 8, every: int = 100, out=sys.stdout) -> list[dict]:
  """Trains the exit at layer `depth` (one of config.model.exits) on the pooled training set;
  returns (and prints) the evaluation rows."""
  exits = tuple(config.model.exits)
  if depth not in exits:
    raise ValueError(f"--depth {depth} is not an exit layer; config.model.exits = {exits}")
  encoder = config_utils.validate_config(config)
  corpus = pipeline.load_corpus(config)
  encoder, model_params, head_params = pipeline.init_model(
      config, encoder, jax.random.key(config.seed), corpus)
  params, frozen = models.split_params(model_params, head_params)
  feats, fmask, tfeats, tmask = pipeline.utterance_features(config, encoder, frozen, corpus)
  task = pipeline.task_of(config)
  labels, test_labels = task.labels(corpus.train), task.labels(corpus.test)
  model = pipeline.round_spec(config, encoder, (depth,)).client.model
  row = exits.index(depth)
  with config.unlocked():
    config.client_optimizer.learning_rate = learning_rate
    config.client_optimizer.head_learning_rate = head_learning_rate
  opt = pipeline.client_optimizer(config.client_optimizer)  # a run's client optimizer

  def loss_fn(p, x, m, y):
    heads = jax.tree.map(lambda a: a[row:row + 1], p["heads"])
    out = model.logits({"backbone": p["backbone"], "heads": heads}, x, m, depth, (depth,))
    return task.objective.example_loss(out, y).mean()

  @jax.jit
  def step(p, s, x, m, y):
    loss, g = jax.value_and_grad(loss_fn)(p, x, m, y)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  state, rng, losses, rows = opt.init(params), np.random.default_rng(config.seed), [], []
  t0 = time.time()
  for i in range(1, steps + 1):
    idx = rng.choice(len(feats), min(batch_size, len(feats)), replace=False)
    params, state, loss = step(params, state, feats[idx], fmask[idx], labels[idx])
    losses.append(float(loss))
    if i % every == 0 or i == steps:
      ev = fl.evaluate(model, params, tfeats, tmask, test_labels,
                       batch_size=config.eval_batch_size, heads_at=(depth,),
                       objective=task.objective)
      scores = {k: float(v[0]) for k, v in task.metrics(ev, corpus.test).items()}
      r = dict(step=i, train_loss=float(np.mean(losses[-every:])), **scores,
               seconds=round(time.time() - t0, 1))
      print(json.dumps(r), file=out, flush=True)
      rows.append(r)
  return rows


def main(argv=None) -> int:
  p, overrides, own = config_utils.script_parser(__doc__, argv)
  p.add_argument("--config", default=str(config_utils.default_config_path()))
  p.add_argument("--depth", type=int, required=True, help="the exit layer to train")
  p.add_argument("--steps", type=int, default=900)
  p.add_argument("--learning-rate", type=float, default=None,
                 help="default: config.client_optimizer.learning_rate")
  p.add_argument("--head-learning-rate", type=float, default=None, help="default: the same")
  p.add_argument("--batch-size", type=int, default=None, help="default: config.batch_size")
  p.add_argument("--every", type=int, default=300, help="steps between evaluations")
  args = p.parse_args(own)
  config = config_utils.apply_overrides(config_utils.load_config(args.config), overrides)
  lr = config.client_optimizer.learning_rate if args.learning_rate is None else args.learning_rate
  try:
    train_exit(config, args.depth, args.steps, lr, args.head_learning_rate,
               args.batch_size or config.batch_size, args.every)
  except ValueError as e:
    p.error(str(e))
  return 0


if __name__ == "__main__":
  sys.exit(main())
