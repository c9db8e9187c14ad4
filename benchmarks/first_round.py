"""The first round of `fedexit run` against a steady one, and how much of the run is compiling.

    python benchmarks/first_round.py run --workdir W --config.rounds=3 [--config.* ...]

Runs the `fedexit` command line in this process and prints one JSON line: `round_s` (seconds per
round, timed between metrics rows; the last round includes the evaluation), `compile_s` (the sum
of JAX's backend-compile events, which cover loading a program from the compilation cache too),
the programs compiled, the compilation cache's hits and writes, and the whole command's wall
time. Run it twice with the same config to see what the compilation cache saves (README,
"Compilation cache"); `--config.compilation_cache=None` gives the uncached figures.
"""
from __future__ import annotations

import json
import sys
import time

from jax import monitoring

from fedexit_jax import cli, metrics

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
HIT_EVENT = "/jax/compilation_cache/cache_hits"
WRITE_EVENT = "/jax/compilation_cache/cache_misses"  # recorded as an entry is written


def main(argv: list[str]) -> int:
  compiles, events, marks = [], [], []
  monitoring.register_event_duration_secs_listener(
      lambda name, secs, **kw: compiles.append(secs) if name == COMPILE_EVENT else None)
  monitoring.register_event_listener(lambda name, **kw: events.append(name))
  init, write = metrics.MetricsWriter.__init__, metrics.MetricsWriter.write

  def timed_init(self, *args, **kwargs):
    init(self, *args, **kwargs)
    marks.append(time.perf_counter())  # the round loop starts right after

  def timed_write(self, *args, **kwargs):
    marks.append(time.perf_counter())  # a round (and its evaluation, if any) is done
    write(self, *args, **kwargs)

  metrics.MetricsWriter.__init__, metrics.MetricsWriter.write = timed_init, timed_write
  t0 = time.perf_counter()
  rc = cli.main(argv)
  print(json.dumps({
      "round_s": [round(b - a, 2) for a, b in zip(marks, marks[1:])],
      "compile_s": round(sum(compiles), 2), "programs_compiled": len(compiles),
      "programs_over_1s": sum(c >= 1.0 for c in compiles),
      "cache_hits": events.count(HIT_EVENT), "cache_writes": events.count(WRITE_EVENT),
      "wall_s": round(time.perf_counter() - t0, 1)}))
  return rc


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
