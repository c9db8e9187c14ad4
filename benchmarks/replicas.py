"""An ablation grid as one program: R simulations advanced by one compiled round
(fl.run_replicas) against the same R rounds run one after another (fl.run_round each).

  python benchmarks/replicas.py [--replicas 1,2,4,8,16] [--clients 32] [--per-round 4]
      [--examples 16] [--rounds 3] [--vmap]

The default run's model and frame shapes (configs/default.py: small preset, 1 s clips, depths
3/6, Adam, 2 local epochs) on random features, fewer examples per client so that R = 16 stays
in minutes on a laptop CPU. Replica r: its own RNG, its own sampled cohort (seed r) and the
scheme paper / fedavg_naive / samples / uniform / depth in turn. Per R: the median steady time of
one grid round (R rounds) on each path and the ratio one-by-one / one program. `--vmap` also
times batch = R (all replicas vmapped: the accelerator setting; on CPU batching per-client
weights does not pay, simulate.default_chunk_size).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

if __package__ in (None, ""):
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedexit_jax import runtime  # pylint: disable=g-import-not-at-top

runtime.use_cpu_devices("auto")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from benchmarks.common import block, median_time  # pylint: disable=g-import-not-at-top
from fedexit_jax import config_utils, models, pipeline
from fedexit_jax import federated as fl
from fedexit_jax.models import config as mconfig, heads

SCHEMES = ("paper", "fedavg_naive", "samples", "uniform", "depth")


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--replicas", default="1,2,4,8,16")
  ap.add_argument("--clients", type=int, default=32)
  ap.add_argument("--per-round", type=int, default=4)
  ap.add_argument("--examples", type=int, default=16)
  ap.add_argument("--rounds", type=int, default=3, help="timed grid rounds per figure")
  ap.add_argument("--vmap", action="store_true", help="also time all replicas vmapped")
  ap.add_argument("--tiny", action="store_true", help="a 32-wide model (smoke test)")
  a = ap.parse_args(argv)
  config = config_utils.default_config()
  cfg = mconfig.small(**(dict(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                              conv_dim=(16,) * 7, num_conv_pos_embeddings=8,
                              num_conv_pos_embedding_groups=2) if a.tiny else {}))
  k1, k2 = jax.random.split(jax.random.key(0))
  params, _ = models.split_params(models.init_params(cfg, k1),
                                  heads.init_exit_heads(k2, cfg.hidden_size, 12, 4))
  spec = pipeline.round_spec(config, cfg, (3, 6))
  m, n, t, c = a.clients, a.examples, cfg.num_frames(16000), cfg.conv_dim[-1]
  rs = np.random.default_rng(0)
  data = fl.ClientData(rs.standard_normal((m, n, t, c), np.float32), np.ones((m, n, t), bool),
                       rs.integers(0, 12, (m, n)).astype(np.int32),
                       np.arange(n)[None] < rs.integers(n // 2, n + 1, (m, 1)))
  depths = np.array([3, 6] * (m // 2) + [3] * (m % 2))
  resident = fl.place_dataset(data, spec)
  print(f"{jax.device_count()} {jax.devices()[0].platform} devices; {a.per_round} of {m} clients "
        f"per round, up to {n} examples each; median of {a.rounds} grid rounds")
  head = "| R | one by one (s) | one program (s) | ratio |" + (" vmapped (s) | ratio |"
                                                             if a.vmap else "")
  print(head)
  print("|" + "---|" * (head.count("|") - 1))
  rows = []
  for r in [int(x) for x in a.replicas.split(",")]:
    schemes = [SCHEMES[i % len(SCHEMES)] for i in range(r)]
    states = [fl.init_server_state(params, spec.server_optimizer, jax.random.key(i))
              for i in range(r)]
    specs = [dataclasses.replace(spec, weighting=w) for w in schemes]
    rnd = [0]

    def cohorts():
      rnd[0] += 1
      return [fl.cohort_from_dataset(resident, fl.sample_clients(i, rnd[0], m, a.per_round),
                                     depths) for i in range(r)]

    def one_by_one():
      for i, c_ in enumerate(cohorts()):
        states[i] = fl.run_round(states[i], c_, specs[i])[0]
      block(states)

    stacked = [fl.stack_states(states)]

    def program(batch):
      stacked[0] = fl.run_replicas(stacked[0], cohorts(), spec, schemes, batch=batch)[0]
      block(stacked[0])

    seq = median_time(one_by_one, a.rounds)[0]
    one = median_time(lambda: program(1), a.rounds)[0]
    row = {"replicas": r, "one_by_one": seq, "one_program": one}
    line = f"| {r} | {seq:.3f} | {one:.3f} | {seq / one:.2f}x |"
    if a.vmap:
      row["vmapped"] = median_time(lambda: program(r), a.rounds)[0]
      line += f" {row['vmapped']:.3f} | {seq / row['vmapped']:.2f}x |"
    print(line, flush=True)
    rows.append(row)
  return 0


if __name__ == "__main__":
  sys.exit(main())
