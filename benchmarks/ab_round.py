"""A/B of two source trees in one sitting: round time and round compile time.

  python benchmarks/ab_round.py OLD_TREE NEW_TREE [--order ABBA] [--rounds 6] [--hidden 256]

OLD_TREE / NEW_TREE are checkouts of this repository (e.g. `git worktree add /tmp/old <commit>`).
Each measurement runs in a fresh process with that tree first on sys.path, alternating the trees
(ABBA by default, so a drift of the machine's speed cancels out), and times, for two workloads:
  quick    the engine round of `benchmarks/throughput.py --quick` (32 clients, depths 3/6, small
           preset, 2 local steps of batch 4 on 0.5 s clips; `--hidden` widens it);
  default  one round of the embedded default run (configs/default.py: 10 clients of the speaker
           partition, cached conv features, Adam, 2 local epochs), cohorts sampled as a run does.
For each: trace + lower and compile time of the round program (AOT, no persistent compilation
cache), then the median of `--rounds` steady rounds. Prints medians per tree and NEW / OLD ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def _child(tree: str, rounds: int, hidden: int | None = None) -> dict:
  sys.path.insert(0, tree)
  import fedexit_jax  # pylint: disable=import-outside-toplevel
  assert fedexit_jax.__file__.startswith(os.path.abspath(tree)), fedexit_jax.__file__
  from fedexit_jax import runtime  # pylint: disable=import-outside-toplevel
  runtime.use_cpu_devices("auto")
  import jax  # pylint: disable=import-outside-toplevel
  from fedexit_jax import config_utils, pipeline  # pylint: disable=import-outside-toplevel
  from fedexit_jax import federated as fl  # pylint: disable=import-outside-toplevel
  from fedexit_jax.federated import simulate  # pylint: disable=import-outside-toplevel
  from benchmarks import throughput  # pylint: disable=import-outside-toplevel

  def split(model_params, head_params):
    try:
      from fedexit_jax import models  # pylint: disable=import-outside-toplevel
      return models.split_params(model_params, head_params)
    except AttributeError:  # before the model interface
      return fl.split_params(model_params, head_params)

  def measure(state, cohorts, spec):
    args = simulate.prepare(cohorts[0], spec)
    program = simulate.round_program(spec)
    t0 = time.perf_counter()
    from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=import-outside-toplevel
    placed = jax.device_put(state, NamedSharding(simulate._mesh(spec), PartitionSpec()))
    lowered = program.lower(placed, *args)
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    jax.block_until_ready(fl.run_round(state, cohorts[0], spec)[0])  # warm (jit cache)
    times = []
    for c in cohorts[1:rounds + 1]:
      s = time.perf_counter()
      state = jax.block_until_ready(fl.run_round(state, c, spec)[0])
      times.append(time.perf_counter() - s)
    return {"trace_lower_s": t1 - t0, "compile_s": t2 - t1,
            "round_s": statistics.median(times)}

  out = {}
  w = throughput.plan("quick").headline
  if hidden:
    w = throughput.widen(w, hidden)
  bench = throughput.Bench(w, with_torch=False, real_features=False)
  spec = bench.w.round_spec()
  out["quick"] = measure(bench.state(spec), [bench.cohort] * (rounds + 1), spec)

  config = config_utils.default_config()
  with config.unlocked():
    config.progress_bar = False
  encoder = config_utils.validate_config(config)
  corpus = pipeline.load_corpus(config)
  encoder, mp, hp = pipeline.init_model(config, encoder, jax.random.key(config.seed))
  params, frozen = split(mp, hp)
  data = pipeline.federated_data(config, encoder, frozen, corpus)
  m = int(data.clients.labels.shape[0])
  depths, _ = pipeline.client_depths(config, encoder, m)
  spec = pipeline.round_spec(config, encoder, tuple(sorted(set(depths.tolist()))))
  state = fl.init_server_state(params, spec.server_optimizer, jax.random.key(config.seed))
  cohorts = [fl.cohort_from_dataset(data.clients, fl.sample_clients(
      config.seed, r, m, clients_per_round=config.clients_per_round), depths)
             for r in range(rounds + 1)]
  out["default"] = measure(state, cohorts, spec)
  return out


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("old")
  ap.add_argument("new")
  ap.add_argument("--order", default="ABBA", help="A = old, B = new")
  ap.add_argument("--rounds", type=int, default=6, help="steady rounds timed per measurement")
  ap.add_argument("--hidden", type=int, default=None,
                  help="the quick workload at this width (as throughput.py --hidden)")
  ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
  a = ap.parse_args()
  if a.child:
    print("RESULT " + json.dumps(_child(a.child, a.rounds, a.hidden)), flush=True)
    return 0
  trees = {"A": os.path.abspath(a.old), "B": os.path.abspath(a.new)}
  results: dict[str, list[dict]] = {"A": [], "B": []}
  env = {k: v for k, v in os.environ.items() if k != "FEDEXIT_COMPILATION_CACHE"}
  env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
  for tag in a.order:
    t0 = time.time()
    proc = subprocess.run([sys.executable, __file__, a.old, a.new, "--rounds", str(a.rounds),
                           *(["--hidden", str(a.hidden)] if a.hidden else []),
                           "--child", trees[tag]], capture_output=True, text=True, env=env,
                          check=False)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not line:
      print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
      return 1
    results[tag].append(json.loads(line[0][7:]))
    print(f"{tag} ({trees[tag]}): {results[tag][-1]}  [{time.time() - t0:.0f} s]", flush=True)
  print("\nmedians over the runs of each tree; ratio = new / old")
  print("| workload | figure | old | new | new / old |")
  print("|---|---|---|---|---|")
  for w in ("quick", "default"):
    for f in ("round_s", "trace_lower_s", "compile_s"):
      o = statistics.median(r[w][f] for r in results["A"])
      n = statistics.median(r[w][f] for r in results["B"])
      print(f"| {w} | {f} | {o:.3f} | {n:.3f} | {n / o:.3f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
