"""A/B of XLA:CPU options and of the device/chunk split, in one sitting, on the engine's round.

  python benchmarks/cpu_options.py [--widths 128,256] [--variants all] [--order AB]
      [--rounds 5]

Each measurement is a fresh process (XLA reads its flags at start-up) timing the round of
`benchmarks/throughput.py --quick` (32 clients at depths 3/6, 2 SGD steps of batch 4 on 0.5 s
clips, cached conv features) for one model width: hidden 128 (the small preset), 256 (4 heads,
FFN 1024) or 384 (6 heads, FFN 1536); the median of `--rounds` steady rounds after a compiling
one. The variants run in turn, one pass per letter of `--order` (ABAB: four passes, each
running every variant once, so a drift of the machine's speed falls on all of them). Prints per width the median round per
variant and its ratio to `baseline` (< 1: faster). Compilation cache off.

Variants: baseline (one CPU device per core, chunk 1 per device: `fedexit run` below 256 wide);
xnnpack / onednn (XLA:CPU's XNNPACK or oneDNN paths for dots, --xla_cpu_use_*); fast_math
(--xla_cpu_enable_fast_math: changes numerics, reported only); eigen_1thread
(--xla_cpu_multi_thread_eigen=false); 1device (one CPU device for the host); chunk2 (2 clients
per device vmapped together).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

WIDTHS = {128: (), 256: (("hidden_size", 256), ("intermediate_size", 1024),
                         ("num_attention_heads", 4)),
          384: (("hidden_size", 384), ("intermediate_size", 1536), ("num_attention_heads", 6))}
# name -> (XLA_FLAGS additions, cpu_devices, chunk per device)
VARIANTS = {
    "baseline": ("", "auto", 1),
    "xnnpack": ("--xla_cpu_use_xnnpack=true", "auto", 1),
    "onednn": ("--xla_cpu_use_onednn=true", "auto", 1),
    "fast_math": ("--xla_cpu_enable_fast_math=true", "auto", 1),
    "eigen_1thread": ("--xla_cpu_multi_thread_eigen=false", "auto", 1),
    "1device": ("", 1, 1),
    "chunk2": ("", "auto", 2),
}


def _child(width: int, devices, chunk: int, rounds: int) -> dict:
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
  from fedexit_jax import runtime  # pylint: disable=import-outside-toplevel
  n = runtime.use_cpu_devices(devices)
  import dataclasses  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from benchmarks import throughput  # pylint: disable=import-outside-toplevel
  from fedexit_jax import federated as fl  # pylint: disable=import-outside-toplevel
  w = dataclasses.replace(throughput.plan("quick").headline, overrides=WIDTHS[width],
                          chunk_size=chunk * n)
  bench = throughput.Bench(w, with_torch=False, real_features=False)
  spec = w.round_spec()
  state = bench.state(spec)
  t0 = time.perf_counter()
  state = jax.block_until_ready(fl.run_round(state, bench.cohort, spec)[0])
  first = time.perf_counter() - t0
  times = []
  for _ in range(rounds):
    t0 = time.perf_counter()
    state = jax.block_until_ready(fl.run_round(state, bench.cohort, spec)[0])
    times.append(time.perf_counter() - t0)
  return {"round_s": statistics.median(times), "first_s": first, "devices": n}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--widths", default="128,256")
  ap.add_argument("--variants", default="all", help="comma-separated names, or all")
  ap.add_argument("--order", default="AB", help="one pass over the variants per letter")
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
  a = ap.parse_args(argv)
  if a.child:
    width, devices, chunk = json.loads(a.child)
    print("RESULT " + json.dumps(_child(width, devices, chunk, a.rounds)), flush=True)
    return 0
  names = list(VARIANTS) if a.variants == "all" else a.variants.split(",")
  if "baseline" not in names:
    names.insert(0, "baseline")
  widths = [int(x) for x in a.widths.split(",")]
  res: dict[tuple[int, str], list[float]] = {}
  for _ in a.order:
    for width in widths:
      for name in names:
        flags, devices, chunk = VARIANTS[name]
        env = {k: v for k, v in os.environ.items()
               if k not in ("FEDEXIT_COMPILATION_CACHE", "XLA_FLAGS")}
        env["FEDEXIT_COMPILATION_CACHE"] = "off"
        if flags:
          env["XLA_FLAGS"] = flags
        proc = subprocess.run([sys.executable, __file__, "--rounds", str(a.rounds), "--child",
                               json.dumps([width, devices, chunk])], capture_output=True,
                              text=True, env=env, check=False)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
          why = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
          print(f"{width} {name}: failed ({why})", flush=True)
          continue
        r = json.loads(line[0][7:])
        res.setdefault((width, name), []).append(r["round_s"])
        print(f"{width} {name}: {r}", flush=True)
  print("\n| width | variant | steady round (s), median | vs baseline |")
  print("|---|---|---|---|")
  for width in widths:
    base = res.get((width, "baseline"))
    for name in names:
      if (width, name) not in res:
        print(f"| {width} | {name} | failed | - |")
        continue
      t = statistics.median(res[width, name])
      ratio = f"{t / statistics.median(base):.3f}" if base else "-"
      print(f"| {width} | {name} | {t:.3f} | {ratio} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
