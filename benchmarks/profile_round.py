"""Where a round's time goes: the engine's round and the PyTorch loop's, op by op, in one run.

  python benchmarks/profile_round.py [--hidden 256] [--rounds 3] [--no-torch]

Profiles `--rounds` steady rounds of `benchmarks/throughput.py --quick`'s workload (32 clients at
depths 3/6, 2 SGD steps of batch 4 on 0.5 s clips; `--hidden` widens it as throughput.py does):
  engine   jax.profiler's trace (XLA:CPU emits one event per executed op), self time per op
           (time inside nested ops subtracted), summed over the threads;
  PyTorch  torch.profiler over the loop's round (`torch_baseline.TorchFederation`, one thread,
           as the benchmark's 1-thread row), self CPU time per aten op.
Ops are put in classes (matmul, convolution, elementwise/fused, reductions, copies and layout,
slicing, collectives across the CPU devices (their time includes waiting for the other device),
other); the table gives each class's share of the op time and, for matmuls, the
FLOP rate per core their time implies (the round's analytic FLOPs, which are almost all matmul
FLOPs, over the time in matmul ops summed over threads: an upper bound on their true rate). A
2048^2 matmul's FLOP/s per core in the same run sets the scale. The PyTorch side includes the
frozen CNN's forward on raw audio, which the engine caches: its convolution row is the FLOPs the
engine saves.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The engine's class of an XLA:CPU op, by the op name the trace records (fusions are named after
# their root: "ynn_fusion" are dots handed to YNNPACK, "*_dot_fusion" dots with fused operands).
CLASSES = ("matmul", "convolution", "elementwise", "reduction", "copy/layout", "slicing",
           "collective", "other")


def engine_class(name: str) -> str:
  n = name.lower()
  if n.startswith(("all-reduce", "all-gather", "collective", "reduce-scatter", "all-to-all")):
    return "collective"  # across the CPU devices: includes waiting for the other device
  if "ynn" in n or "dot" in n or "gemm" in n or "matmul" in n:
    return "matmul"
  if "convolution" in n or n.startswith("conv"):
    return "convolution"
  if "reduce" in n or "softmax" in n:
    return "reduction"
  if n.startswith(("copy", "transpose", "bitcast", "concatenate", "pad", "broadcast")):
    return "copy/layout"
  if "dynamic" in n or n.startswith(("slice", "gather", "scatter")):
    return "slicing"
  if "fusion" in n or n.startswith(("add", "multiply", "subtract", "divide", "exp", "tanh",
                                    "select", "compare", "maximum", "sqrt", "rsqrt", "log")):
    return "elementwise"
  return "other"


def torch_class(name: str) -> str:
  n = name.lower()
  if any(k in n for k in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear",
                          "aten::baddbmm")):
    return "matmul"
  if "conv" in n:
    return "convolution"
  if any(k in n for k in ("sum", "mean", "softmax", "norm", "var", "std", "max")):
    return "reduction"
  if n == "aten::t" or any(k in n for k in ("copy", "transpose", "permute", "contiguous", "view",
                                             "reshape", "clone", "cat", "pad", "expand")):
    return "copy/layout"
  if any(k in n for k in ("slice", "select", "index", "narrow", "split", "chunk")):
    return "slicing"
  if any(k in n for k in ("add", "mul", "sub", "div", "gelu", "exp", "tanh", "sqrt", "where",
                          "fill", "zero", "sgd", "foreach")):
    return "elementwise"
  return "other"


# Trace events that wrap others (the executable, thunk executor, control flow) or are not ops.
_NOT_OPS = ("PjitFunction", "PjRt", "ThunkExecutor", "Execute", "Allocate", "Handle", "Parse",
            "Wait", "PythonRef", "end: ", "$")


def self_times(events: list[dict]) -> dict[str, float]:
  """{op name: self time in us}: each complete ('X') event's duration minus that of the events
  nested directly inside it on the same thread."""
  by_thread = collections.defaultdict(list)
  for e in events:
    if e.get("ph") == "X" and "dur" in e:
      by_thread[(e.get("pid"), e.get("tid"))].append(e)
  out: dict[str, float] = collections.defaultdict(float)
  for evs in by_thread.values():
    evs.sort(key=lambda e: (e["ts"], -e["dur"]))
    stack: list[tuple[float, str]] = []  # (end, name) of the enclosing events
    for e in evs:
      while stack and e["ts"] >= stack[-1][0]:
        stack.pop()
      if stack:
        out[stack[-1][1]] -= e["dur"]
      out[e["name"]] += e["dur"]
      stack.append((e["ts"] + e["dur"], e["name"]))
  return dict(out)


def engine_profile(bench, spec, rounds: int) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  from fedexit_jax import federated as fl  # pylint: disable=import-outside-toplevel
  from benchmarks.common import block  # pylint: disable=import-outside-toplevel
  state = bench.state(spec)
  block(fl.run_round(state, bench.cohort, spec)[0])  # compile, warm
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      t0 = time.perf_counter()
      for _ in range(rounds):
        block(fl.run_round(state, bench.cohort, spec)[0])
      wall = (time.perf_counter() - t0) / rounds
    path = glob.glob(os.path.join(d, "**", "perfetto_trace.json.gz"), recursive=True)[0]
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  times = {k: v / rounds / 1e6 for k, v in self_times(events).items()
           if not k.startswith(_NOT_OPS) and v > 0}
  return {"round_s": wall, "ops": times}


def torch_profile(bench, rounds: int) -> dict:
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from torch.profiler import ProfilerActivity, profile  # pylint: disable=import-outside-toplevel
  from benchmarks import torch_baseline  # pylint: disable=import-outside-toplevel
  w = bench.w
  torch.set_num_threads(1)
  fed = torch_baseline.TorchFederation(w, bench.hf, bench.head_params, "cpu")
  waves = torch.from_numpy(bench.waves)
  labels = torch.from_numpy(bench.labels).long()
  depths, rng = w.depths(), np.random.default_rng(w.seed)
  fed.run_round(waves, labels, depths, rng)  # warm
  t0 = time.perf_counter()
  with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(rounds):
      fed.run_round(waves, labels, depths, rng)
  wall = (time.perf_counter() - t0) / rounds
  ops = {e.key: e.self_cpu_time_total / rounds / 1e6 for e in prof.key_averages()
         if e.self_cpu_time_total > 0}
  return {"round_s": wall, "ops": ops}


def by_class(ops: dict[str, float], classify) -> dict[str, float]:
  out = dict.fromkeys(CLASSES, 0.0)
  for name, t in ops.items():
    out[classify(name)] += t
  return out


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--hidden", type=int, default=None, help="model width (default: 128)")
  ap.add_argument("--rounds", type=int, default=3, help="profiled steady rounds per contender")
  ap.add_argument("--no-torch", action="store_true", help="profile the engine only")
  ap.add_argument("--top", type=int, default=8, help="ops listed per contender")
  ap.add_argument("--out", default=None, help="JSON with every op's time")
  a = ap.parse_args()

  from fedexit_jax import runtime  # pylint: disable=import-outside-toplevel
  runtime.use_cpu_devices("auto")
  from benchmarks import common, limits, throughput  # pylint: disable=import-outside-toplevel
  w = throughput.plan("quick").headline
  if a.hidden:
    w = throughput.widen(w, a.hidden)
  with_torch = not a.no_torch
  bench = throughput.Bench(w, with_torch=with_torch, real_features=with_torch)
  spec = w.round_spec()
  flops = sum(bench.client_flops(int(d)) for d in w.depths())
  res = {"hidden": w.config.hidden_size, "clients": w.num_clients, "engine_flops": flops,
         "engine": engine_profile(bench, spec, a.rounds)}
  if with_torch:
    res["torch"] = torch_profile(bench, a.rounds)
  res["matmul"] = limits.matmul_flops(2048, 3)

  mm = res["matmul"]["flops_per_s"]
  cores = common.num_cores()  # the big matmul runs on every core; op times are per core
  print(f"\nhidden {res['hidden']}, {w.num_clients} clients, {a.rounds} profiled rounds; "
        f"engine round FLOPs {flops / 1e9:.2f} G (the PyTorch loop adds the CNN's forward); "
        f"2048^2 matmul in this run: {mm / 1e9:.1f} GFLOP/s on {cores} cores")
  rows = [("engine", res["engine"], engine_class)]
  if with_torch:
    rows.append(("PyTorch loop, 1 thread", res["torch"], torch_class))
  print("\n| contender | round (s) | op time (s) | " + " | ".join(CLASSES) + " |")
  print("|---|---|---|" + "---|" * len(CLASSES))
  for label, r, cls in rows:
    c = by_class(r["ops"], cls)
    tot = sum(c.values())
    print(f"| {label} | {r['round_s']:.3f} | {tot:.3f} | "
          + " | ".join(f"{100 * c[k] / tot:.0f}%" for k in CLASSES) + " |")
  for label, r, cls in rows:
    c = by_class(r["ops"], cls)
    rate = flops / c["matmul"] if c["matmul"] else float("nan")
    print(f"\n{label}: {c['matmul']:.3f} core-s per round in matmul ops -> at most "
          f"{rate / 1e9:.1f} GFLOP/s per core on the engine's round FLOPs "
          f"({100 * rate / (mm / cores):.0f}% of the 2048^2 matmul's rate per core); "
          "top ops (self time per round, summed over threads):")
    for name, t in sorted(r["ops"].items(), key=lambda kv: -kv[1])[:a.top]:
      print(f"  {t * 1e3:9.1f} ms  {cls(name):12s} {name[:90]}")
  if a.out:
    with open(a.out, "w", encoding="utf-8") as f:
      json.dump(res, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
