"""Host-side share of a round: client data gathered on the host and copied every round, against
the dataset placed on the device once and gathered inside the compiled program.

  python benchmarks/resident_data.py [--clients 100] [--per-round 10] [--rounds 8]

The workload has the default run's shapes (configs/default.py: small preset, 64 padded examples
of 1 s per client, 49 frames of 64 conv channels, 10 of 100 clients per round, depths 3/6, Adam,
2 local epochs) on random features (the cost does not depend on the values). Per path: the median
steady round, and the median time of its host part (simulate.prepare: layout, gather, copy).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedexit_jax import runtime  # pylint: disable=g-import-not-at-top

runtime.use_cpu_devices("auto")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from fedexit_jax import config_utils, models, pipeline  # pylint: disable=g-import-not-at-top
from fedexit_jax import federated as fl
from fedexit_jax.federated import simulate
from fedexit_jax.models import config as mconfig, heads


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--clients", type=int, default=100)
  ap.add_argument("--per-round", type=int, default=10)
  ap.add_argument("--rounds", type=int, default=8)
  a = ap.parse_args()
  config = config_utils.default_config()
  cfg = mconfig.small()
  k1, k2 = jax.random.split(jax.random.key(0))
  params, _ = models.split_params(models.init_params(cfg, k1),
                                  heads.init_exit_heads(k2, cfg.hidden_size, 12, 4))
  spec = pipeline.round_spec(config, cfg, (3, 6))
  m, n, t, c = a.clients, 64, cfg.num_frames(16000), cfg.conv_dim[-1]
  rs = np.random.default_rng(0)
  data = fl.ClientData(rs.standard_normal((m, n, t, c), np.float32), np.ones((m, n, t), bool),
                       rs.integers(0, 12, (m, n)).astype(np.int32),
                       np.arange(n)[None] < rs.integers(28, 55, (m, 1)))
  depths = np.array([3, 6] * (m // 2) + [3] * (m % 2))
  resident = fl.place_dataset(data, spec)
  print(f"{jax.device_count()} devices; dataset {sum(x.nbytes for x in data) / 2**20:.0f} MiB; "
        f"{a.per_round} of {m} clients per round")
  print("| path | round (s) | host part (s) | host share |")
  print("|---|---|---|---|")
  for name, source in (("host gather + copy per round", data), ("resident on device", resident)):
    state = fl.init_server_state(params, spec.server_optimizer, jax.random.key(0))
    rounds, host = [], []
    for r in range(a.rounds + 1):
      cohort = fl.cohort_from_dataset(source, fl.sample_clients(0, r, m, a.per_round), depths)
      t0 = time.perf_counter()
      jax.block_until_ready(simulate.prepare(cohort, spec))
      host.append(time.perf_counter() - t0)
      t0 = time.perf_counter()
      state = jax.block_until_ready(fl.run_round(state, cohort, spec)[0])
      rounds.append(time.perf_counter() - t0)
    rt, ht = statistics.median(rounds[1:]), statistics.median(host[1:])
    print(f"| {name} | {rt:.3f} | {ht:.4f} | {ht / rt:.1%} |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
