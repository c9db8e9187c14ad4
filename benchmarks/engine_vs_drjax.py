"""The engine against DrJAX on the `--quick` workload, per CPU device split.

  python benchmarks/engine_vs_drjax.py 1     # the host as one JAX device
  python benchmarks/engine_vs_drjax.py 2     # split into 2 devices (what cpu_devices=auto gives)

(One process per split: the device count is fixed when JAX starts.) Prints the median of 5
steady rounds for the engine at its default chunk (one client per device) and at chunk 16, and
for the DrJAX round (benchmarks/drjax_baseline.py), on the same weights, cohort and depths.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedexit_jax import runtime  # pylint: disable=g-import-not-at-top

DEVICES = int(sys.argv[1]) if len(sys.argv) > 1 else 2
runtime.use_cpu_devices(DEVICES)

from benchmarks import throughput  # pylint: disable=g-import-not-at-top


def main() -> int:
  w = throughput.plan("quick").headline
  bench = throughput.Bench(w, with_torch=False, real_features=False)
  times = {f"engine, chunk {DEVICES} (default)": bench.time_engine(w.round_spec(DEVICES), 5),
           "engine, chunk 16": bench.time_engine(w.round_spec(16), 5),
           "DrJAX": bench.time_drjax(w.round_spec(16), 5)}
  print(f"{DEVICES} CPU device(s), {w.num_clients} clients, median of 5 steady rounds")
  for name, t in times.items():
    print(f"| {name} | {t:.3f} s |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
