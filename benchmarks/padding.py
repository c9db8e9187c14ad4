"""What bucketing utterances by length could save: the padding of a task's client data, and a
local step's time at the lengths each scheme pads to.

    python benchmarks/padding.py [--config configs/asr.py] [--depth 9] [--reps 5]

Utterances of different lengths are padded to the training set's longest (<= data.max_seconds)
and masked. Three schemes, counted in frames over the run's own clients and cohorts:
  global         every row padded to the longest utterance (what the engine does)
  per cohort     each round's sampled clients padded to their own longest (a compile per bucket)
  sorted batches each client's utterances sorted by length, each batch of `batch_size` padded to
                 its own longest (a fixed batch composition and a compile per length bucket)
`fill` is the share of real audio in the padded frames. Then one local step (forward and
backward of the task's loss at `--depth`, batch_size utterances) is timed at the global length
and at the mean padded length of the sorted batches, so the frame ratio is checked against time.
Prints a markdown table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from fedexit_jax import config_utils, models, pipeline
from fedexit_jax import federated as fl


def fills(config, cd) -> dict[str, float]:
  """{scheme: share of real audio in the padded frames}, and "_sorted_mean_len": the sorted
  batches' mean padded length as a fraction of the longest utterance."""
  lengths, real = np.asarray(cd.lengths), np.asarray(cd.example_mask)
  longest = cd.waveforms.shape[-1]
  audio = float(lengths[real].sum())
  out = {"global": audio / (real.sum() * longest)}
  cohort_audio = cohort_padded = 0.0
  for r in range(config.rounds):
    ids = fl.sample_clients(config.seed, r, lengths.shape[0],
                            clients_per_round=config.clients_per_round)
    top = max(int(lengths[i][real[i]].max()) for i in ids)
    cohort_padded += top * sum(int(real[i].sum()) for i in ids)
    cohort_audio += sum(float(lengths[i][real[i]].sum()) for i in ids)
  out["per cohort"] = cohort_audio / cohort_padded
  padded, batches = 0.0, []
  for i in range(lengths.shape[0]):
    ls = np.sort(lengths[i][real[i]])
    for b in range(0, len(ls), config.batch_size):
      batches.append(int(ls[b:b + config.batch_size].max()))
      padded += batches[-1] * len(ls[b:b + config.batch_size])
  out["sorted batches"] = audio / padded
  out["_sorted_mean_len"] = float(np.mean(batches)) / longest
  return out


def step_seconds(config, encoder, params, labels: np.ndarray, frames: int, depth: int,
                 reps: int) -> float:
  spec = pipeline.round_spec(config, encoder, (depth,))
  model, objective = spec.client.model, spec.client.objective
  heads_at = tuple(e for e in config.model.exits if e <= depth)
  rng = np.random.default_rng(0)
  b = config.batch_size
  x = jnp.asarray(rng.standard_normal((b, frames, encoder.conv_dim[-1])), jnp.float32)
  m = jnp.ones((b, frames), bool)
  y = jnp.asarray(labels[:b])  # the task's own labels (a class, or token ids)

  def loss(p):
    return jnp.mean(objective.example_loss(model.logits(p, x, m, depth, heads_at), y))

  grad = jax.jit(jax.grad(loss))
  jax.block_until_ready(grad(params))  # compile
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(grad(params))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="configs/asr.py")
  p.add_argument("--depth", type=int, default=9)
  p.add_argument("--reps", type=int, default=5)
  args = p.parse_args()
  config = config_utils.load_config(args.config)
  with config.unlocked():
    config.progress_bar = False
  encoder = config_utils.validate_config(config)
  corpus = pipeline.load_corpus(config)
  cd = pipeline.partition_clients(config, corpus.train)
  f = fills(config, cd)
  rel = f.pop("_sorted_mean_len")
  encoder, mp, hp = pipeline.init_model(config, encoder, jax.random.key(0), corpus)
  params, _ = models.split_params(mp, hp, train_feature_encoder=False)
  labels = pipeline.task_of(config).labels(corpus.train)
  full = int(np.ceil(cd.waveforms.shape[-1] / 320))  # ~frames at the conv's 20 ms stride
  short = max(int(round(full * rel)), 1)
  t_full = step_seconds(config, encoder, params, labels, full, args.depth, args.reps)
  t_short = step_seconds(config, encoder, params, labels, short, args.depth, args.reps)
  print("| scheme | fill (real audio / padded) | frames vs global |\n|---|---|---|")
  for k, v in f.items():
    print(f"| {k} | {v:.3f} | {f['global'] / v:.3f} |")
  print(f"\nlocal step at depth {args.depth}, batch {config.batch_size}: {full} frames "
        f"{t_full * 1e3:.1f} ms, {short} frames (sorted batches' mean) {t_short * 1e3:.1f} ms, "
        f"ratio {t_short / t_full:.3f}")
  print(json.dumps({"config": args.config, "fill": f, "frames": [full, short],
                    "step_s": [t_full, t_short], "time_ratio": t_short / t_full}))


if __name__ == "__main__":
  main()
