"""Round throughput of the federated engine against per-client loops, scaling, depth savings and
distance to the hardware limit. Every figure is a ratio measured in this run on this machine.

  python benchmarks/throughput.py --quick      # a couple of minutes on 2 CPU cores
  python benchmarks/throughput.py              # the full CPU table (256 clients, cohorts to 512)
  python benchmarks/throughput.py --gpu        # one GPU, under five minutes: results/gpu.json

Contenders for one round (same weights, data, depths 3/6, local steps, batch size, SGD):
  engine     fl.run_round: depth buckets, chunks of vmapped clients in one compiled program,
             conv features cached once (the cache's one-off cost is reported separately);
  loop       fl.run_round_reference: a Python loop over clients of one jitted client (how FedJAX's
             default backend and most simulators run), then one masked tree-mean;
  pytorch    a Python loop over clients of transformers' HubertModel truncated to the client's
             depth, CNN frozen but recomputed on raw audio every step (benchmarks/torch_baseline).
Times are medians of steady-state rounds after one untimed (compiling) round.
  drjax      the same round written with DrJAX (`drjax.map_fn` over each depth group, then the
             per-layer weighted mean; benchmarks/drjax_baseline.py), when drjax is installed.
  flower     the PyTorch round as a Flower simulation, clients in Ray actors
             (benchmarks/flower_baseline.py), when flwr is installed (`.[peers]`), on CPU only.
Ends with: "speedup vs per-client loop: <x>x at <K> clients", "speedup vs PyTorch loop: ...",
(with drjax installed) "speedup vs DrJAX: ..." and (with flwr) "speedup vs Flower: ...".
`--hidden 256` runs the headline round at another width (intermediate 2x, 32-wide heads).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from benchmarks import common, limits  # pylint: disable=g-import-not-at-top
from benchmarks.common import Workload, block, median_time
from fedexit_jax import accounting, models, runtime
from fedexit_jax import federated as fl
from fedexit_jax.federated import simulate

RESULTS = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class Plan:
  """What one mode measures."""
  name: str
  headline: Workload
  reps: int
  chunk_variants: tuple[int, ...]         # extra engine chunk sizes timed at the headline cohort
  torch_clients: int | None               # clients timed in the PyTorch loop (None: all)
  cohorts: tuple[int, ...]                # cohort scaling (engine default chunk)
  memory_cohorts: tuple[int, ...]         # compiled memory: default chunk vs chunk = K
  backbones: tuple[Workload, ...]         # backbone scaling
  matmul_n: int
  tree_mean_clients: int
  torch_threads: tuple[int, ...] | None = None  # None: all cores and 1, the faster counts


TINY = (("hidden_size", 32), ("intermediate_size", 64), ("num_attention_heads", 2),
        ("conv_dim", (16,) * 7), ("num_conv_pos_embeddings", 8),
        ("num_conv_pos_embedding_groups", 2))
MID = (("hidden_size", 384), ("intermediate_size", 1536), ("num_attention_heads", 6),
       ("conv_dim", (256,) * 7), ("num_conv_pos_embeddings", 64),
       ("num_conv_pos_embedding_groups", 8))


def widen(w: Workload, hidden: int) -> Workload:
  """The same workload `hidden` wide, shaped like the small preset (128 wide): intermediate
  2 x hidden, heads 32 wide."""
  if hidden % 32:
    raise ValueError(f"--hidden {hidden}: must be a multiple of 32 (32-wide attention heads)")
  over = dict(w.overrides) | {"hidden_size": hidden, "intermediate_size": 2 * hidden,
                              "num_attention_heads": hidden // 32}
  return dataclasses.replace(w, overrides=tuple(over.items()))


def plan(mode: str, tiny: bool = False) -> Plan:
  if tiny:  # the smoke test: every code path, seconds
    w = Workload(overrides=TINY, num_clients=4, batch_size=2, local_steps=1, clip_samples=3200,
                 chunk_size=None if mode != "gpu" else 2)
    return Plan(mode + "-tiny", w, 1, (), None, (2, 4), (4,), (w,), 128, 4, (1,))
  if mode == "quick":
    w = Workload(num_clients=32, batch_size=4, local_steps=2, clip_samples=8000)
    return Plan("quick", w, 3, (16, 32), 16, (8, 32), (32,), (w,), 1024, 16)
  if mode == "gpu":
    w = Workload(preset="base", num_clients=256, batch_size=8, local_steps=2, clip_samples=16000)
    small = dataclasses.replace(w, preset="small")
    return Plan("gpu", dataclasses.replace(small), 3, (1, 64, 256), 16, (16, 64, 256, 512),
                (64, 256), (small, dataclasses.replace(w, num_clients=64)), 8192, 64)
  w = Workload(num_clients=256, batch_size=8, local_steps=2, clip_samples=16000)
  few = dataclasses.replace(w, num_clients=8)
  return Plan("full", w, 3, (16,), 32, (16, 64, 256, 512), (16, 64, 256),
              (few, dataclasses.replace(few, overrides=MID),
               dataclasses.replace(few, preset="base")), 2048, 64)


# ----------------------------------------------------------------------------- engine set-up


class Bench:
  """Params (converted from the same HubertModel the PyTorch loop trains), cohort and server
  state for one workload."""

  def __init__(self, w: Workload, with_torch: bool, real_features: bool = True):
    self.w = w
    self.hf = common.torch_hubert(w.config, w.seed) if with_torch else None
    self.params, self.frozen, self.head_params = common.jax_params(w, self.hf)
    cfg = w.config
    if real_features:
      self.waves, self.labels = common.waveforms(w)
      t0 = time.perf_counter()
      feats, fmask = models.cache_features(cfg, self.frozen, self.waves)
      self.cache_seconds = time.perf_counter() - t0  # includes compiling the conv stack once
    else:  # the round's cost does not depend on the values: skip the waveforms
      rng = np.random.default_rng(w.seed)
      t = cfg.num_frames(w.clip_samples)
      shape = (w.num_clients, w.examples_per_client, t, cfg.conv_dim[-1])
      feats = rng.standard_normal(shape, dtype=np.float32)
      fmask = np.ones(shape[:3], bool)
      self.labels = rng.integers(0, w.num_classes, shape[:2]).astype(np.int32)
      self.cache_seconds = None
    data = fl.ClientData(feats, fmask, self.labels, np.ones(self.labels.shape, bool))
    self.cohort = fl.cohort_from_dataset(data, np.arange(w.num_clients), w.depths())

    self._times: dict[Any, float] = {}

  def state(self, spec: fl.RoundSpec):
    return fl.init_server_state(self.params, spec.server_optimizer, jax.random.key(self.w.seed))

  def time_engine(self, spec: fl.RoundSpec, reps: int) -> float:
    if (spec, reps) not in self._times:  # sections share a setting: time (and compile) it once
      runtime.release_programs_if_crowded()  # a sweep of settings compiles many programs
      state = self.state(spec)
      self._times[spec, reps] = median_time(
          lambda: block(fl.run_round(state, self.cohort, spec)[0]), reps)[0]
    return self._times[spec, reps]

  def time_drjax(self, spec: fl.RoundSpec, reps: int) -> float:
    """The same round written with DrJAX (benchmarks/drjax_baseline.py)."""
    from benchmarks import drjax_baseline  # pylint: disable=import-outside-toplevel
    runtime.release_programs_if_crowded()
    state = self.state(spec)
    return median_time(lambda: block(drjax_baseline.run_round(state, self.cohort, spec)), reps)[0]

  def time_reference(self, spec: fl.RoundSpec, reps: int) -> float:
    runtime.release_programs_if_crowded()
    state = self.state(spec)
    return median_time(lambda: block(fl.run_round_reference(state, self.cohort, spec)[0]),
                       reps)[0]

  def memory(self, spec: fl.RoundSpec) -> dict[str, int]:
    """XLA's buffer assignment for the compiled round program (uses simulate's internals:
    the engine has no public hook for its compiled program)."""
    args = simulate.prepare(self.cohort, spec)
    m = simulate._program(spec).lower(self.state(spec), *args).compile()  # pylint: disable=protected-access
    m = m.memory_analysis()
    if m is None:
      return {}
    return {"argument_bytes": int(m.argument_size_in_bytes), "temp_bytes": int(m.temp_size_in_bytes),
            "output_bytes": int(m.output_size_in_bytes)}

  @functools.lru_cache(maxsize=None)
  def client_flops(self, depth: int) -> float:
    """FLOPs of one client's whole local training at `depth` (accounting.step_flops over
    train_client: every local step and every layer counted)."""
    cs = self.w.client_spec()
    one = jax.tree.map(lambda a: jnp.asarray(a[0]), self.cohort.data)
    sliced = cs.slice_params(self.params, depth)
    fn = functools.partial(fl.train_client, cs, depth)
    return accounting.step_flops(fn, sliced, one, jax.random.key(0))


_BENCHES: dict[Workload, Bench] = {}


def get_bench(w: Workload, with_torch: bool = False) -> Bench:
  """One Bench per workload, shared by the sections (its compiled programs are reused)."""
  b = _BENCHES.get(w)
  if b is None or (with_torch and b.hf is None):
    b = _BENCHES[w] = Bench(w, with_torch, real_features=with_torch)
  return b


def _rates(w: Workload, seconds: float) -> dict[str, float]:
  ex = w.num_clients * w.local_steps * w.batch_size
  return {"seconds": seconds, "client_updates_per_s": w.num_clients / seconds,
          "examples_per_s": ex / seconds}


# ----------------------------------------------------------------------------- sections


def _torch_usable() -> bool:
  """torch + transformers importable, and on an accelerator a CUDA torch (a CPU-only torch
  against a GPU engine would not be a comparison)."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return jax.default_backend() == "cpu" or torch.cuda.is_available()


def round_throughput(bench: Bench, reps: int, chunk_variants=(), torch_clients=None,
                     with_reference=True, with_torch=True, torch_threads=None,
                     with_flower=False) -> dict[str, Any]:
  """engine (default chunk, and each of chunk_variants) vs the per-client JAX loop vs the
  per-client PyTorch loop, on the same cohort. PyTorch: with torch_clients < K the loop is timed
  on the first torch_clients clients (depths still alternate 3/6) and scaled to K: a sequential
  loop's time is linear in the number of clients."""
  w = bench.w
  spec = w.round_spec()
  out = {"clients": w.num_clients, "chunk_default": simulate.effective_chunk_size(spec, w.num_clients),
         "cache_features_seconds": bench.cache_seconds}
  out["engine"] = _rates(w, bench.time_engine(spec, reps))
  out["engine_chunks"] = {}
  for c in chunk_variants:
    s = w.round_spec(chunk_size=c)
    out["engine_chunks"][str(c)] = _rates(w, bench.time_engine(s, reps))
  if with_reference:
    out["loop"] = _rates(w, bench.time_reference(spec, reps))
    out["speedup_vs_loop"] = out["loop"]["seconds"] / out["engine"]["seconds"]
  if with_flower and bench.hf is not None:  # before the PyTorch loop, which trains bench.hf
    out["flower"] = flower_round(bench, reps)
    out["speedup_vs_flower"] = out["flower"]["seconds"] / out["engine"]["seconds"]
  if with_torch and bench.hf is not None:
    out["pytorch"] = torch_round(bench, reps, torch_clients, torch_threads)
    out["speedup_vs_pytorch"] = out["pytorch"]["seconds"] / out["engine"]["seconds"]
  if _drjax_usable():
    out["drjax"] = _rates(w, bench.time_drjax(spec, reps))
    out["speedup_vs_drjax"] = out["drjax"]["seconds"] / out["engine"]["seconds"]
  return out


def _drjax_usable() -> bool:
  try:
    import drjax  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


def _flower_usable() -> bool:
  """flwr with its Ray extra importable, and a CPU run (the actors run the CPU torch loop)."""
  found = all(importlib.util.find_spec(m) is not None for m in ("flwr", "ray"))
  return found and jax.default_backend() == "cpu"


def flower_round(bench: Bench, reps: int) -> dict[str, Any]:
  """One Flower simulation of 1 + reps rounds over all K clients, one Ray actor per core (1 CPU,
  1 torch thread each): the first round (Ray and actor start-up, imports, model building) and
  the median of the others."""
  from benchmarks import flower_baseline  # pylint: disable=import-outside-toplevel
  r = flower_baseline.run(bench.w, bench.hf, bench.head_params, rounds=1 + reps,
                          actors=common.num_cores())
  del r["arrays"]
  return {**_rates(bench.w, r["seconds"]), **r}


def torch_round(bench: Bench, reps: int, torch_clients: int | None,
                threads: tuple[int, ...] | None = None) -> dict[str, Any]:
  """The PyTorch loop, timed with each thread count in `threads` (default: all cores, then 1);
  the fastest counts. On a busy machine a multi-threaded torch waits for its descheduled threads
  at every op (measured here: a tiny round 7.5 s with 2 threads, 0.05 s with 1), so taking the
  best keeps the baseline honest, never handicapped."""
  import torch  # pylint: disable=import-outside-toplevel
  from benchmarks.torch_baseline import TorchFederation  # pylint: disable=import-outside-toplevel
  w = bench.w
  n = w.num_clients if torch_clients is None else min(torch_clients, w.num_clients)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  threads = threads or tuple(dict.fromkeys((common.num_cores(), 1)))
  fed = TorchFederation(w, bench.hf, bench.head_params, device)
  waves = torch.from_numpy(bench.waves[:n]).to(device)
  labels = torch.from_numpy(bench.labels[:n]).long().to(device)
  depths = w.depths()[:n]
  rng = np.random.default_rng(w.seed)
  by_threads = {}
  for th in threads:
    torch.set_num_threads(th)
    t, _ = median_time(lambda: fed.run_round(waves, labels, depths, rng), reps)
    by_threads[th] = t * w.num_clients / n
  best = min(by_threads, key=by_threads.get)
  torch.set_num_threads(common.num_cores())
  return {**_rates(w, by_threads[best]), "clients_timed": n, "threads": best,
          "seconds_by_threads": {str(k): v for k, v in by_threads.items()},
          "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}


def cohort_scaling(w: Workload, sizes, memory_sizes, reps: int) -> list[dict[str, Any]]:
  """Engine throughput as the cohort grows (default chunk), and the compiled round's memory with
  the default chunk vs all clients at once (chunk = K): chunking keeps the temporaries flat."""
  rows = []
  for k in sizes:
    wk = dataclasses.replace(w, num_clients=k)
    b = get_bench(wk)
    spec = wk.round_spec()
    row = {"clients": k, "chunk": simulate.effective_chunk_size(spec, k),
           **_rates(wk, b.time_engine(spec, reps))}
    if k in memory_sizes:
      row["memory_default_chunk"] = b.memory(spec)
      row["memory_chunk_all"] = b.memory(wk.round_spec(chunk_size=k))
    row["maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # host, cumulative
    stats = jax.devices()[0].memory_stats() or {}  # accelerators: the allocator's peak so far
    if "peak_bytes_in_use" in stats:
      row["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
    rows.append(row)
  return rows


def backbone_scaling(workloads, reps: int) -> list[dict[str, Any]]:
  rows = []
  for wb in workloads:
    b = get_bench(wb)
    spec = wb.round_spec()
    n = sum(x.size for x in jax.tree.leaves(b.params))
    rows.append({"preset": wb.preset, "hidden_size": wb.config.hidden_size, "params": int(n),
                 "clients": wb.num_clients, **_rates(wb, b.time_engine(spec, reps)),
                 "memory": b.memory(spec)})
  return rows


def depth_savings(bench: Bench, reps: int) -> list[dict[str, Any]]:
  """One client's jitted local training at every exit depth: measured time vs analytic FLOPs."""
  cs = bench.w.client_spec()
  one = jax.tree.map(lambda a: jnp.asarray(a[0]), bench.cohort.data)
  key = jax.random.key(0)
  rows = []
  for d in cs.exits:
    sliced = cs.slice_params(bench.params, d)
    fn = simulate._jit_train(cs, d)  # pylint: disable=protected-access  # the loop's compiled client
    t, _ = median_time(lambda: block(fn(sliced, one, key)), max(reps, 3))
    rows.append({"depth": d, "seconds": t, "flops": bench.client_flops(d)})
  deep = rows[-1]
  for r in rows:
    r["time_ratio"] = r["seconds"] / deep["seconds"]
    r["flop_ratio"] = r["flops"] / deep["flops"]
  return rows


def hardware_limits(bench: Bench, engine_seconds: float, n: int, tree_clients: int,
                    reps: int) -> dict[str, Any]:
  w = bench.w
  flops = {d: bench.client_flops(d) for d in w.depth_levels}
  round_flops = float(sum(flops[int(d)] for d in w.depths()))
  mm = limits.matmul_flops(n, max(reps, 3))
  depths = np.asarray([w.depth_levels[i % len(w.depth_levels)] for i in range(tree_clients)])
  tm = limits.tree_mean_bandwidth(bench.params, w.client_spec().model, depths, max(reps, 3))
  return {"round_flops": round_flops, "round_flops_per_s": round_flops / engine_seconds,
          "matmul": mm, "round_vs_matmul": round_flops / engine_seconds / mm["flops_per_s"],
          "tree_mean": tm}


# ----------------------------------------------------------------------------- report


def _fmt_bytes(b):
  return "-" if b is None else f"{b / 2**20:.1f}"


def markdown(res: dict[str, Any]) -> str:
  m, h = res["machine"], res["round"]
  w = res["workload"]
  lines = [f"# Benchmark `{res['mode']}` ({res['date']})", "",
           f"Machine: {m['device_kind']} ({m['backend']}, {m['num_devices']} device(s)); CPU "
           f"{m['cpu_model']}, {m['cpu_cores']} cores; jax {m['jax_version']}"
           + (f", torch {m['torch_version']} ({m.get('torch_threads')} threads)"
              if "torch_version" in m else "")
           + f"; 1-min load average at start {m['load_average_1m']:.1f}"
           + (f", after the round section {m['load_average_1m_after_round']:.1f}"
              if m.get("load_average_1m_after_round") is not None else "") + ".", "",
           *([f"Note: {res['note']}", ""] if res.get("note") else []),
           f"Workload: preset `{w['preset']}`"
           + (f" at hidden {res['hidden_size']}" if res.get("hidden_size", 128) != 128 else "")
           + f", {w['num_clients']} clients (depths 3/6 alternating), "
           f"{w['local_steps']} local steps x batch {w['batch_size']}, clips of "
           f"{w['clip_samples']} samples, SGD. Median of {res['reps']} steady-state rounds.", "",
           "| contender | s / round | client updates / s | examples / s | engine speedup |",
           "|---|---|---|---|---|"]

  def row(name, r, speed=None):
    lines.append(f"| {name} | {r['seconds']:.3g} | {r['client_updates_per_s']:.3g} | "
                 f"{r['examples_per_s']:.3g} | {'-' if speed is None else f'{speed:.2f}x'} |")

  row(f"engine (chunk {h['chunk_default']}, default)", h["engine"])
  for c, r in h["engine_chunks"].items():
    row(f"engine (chunk {c})", r, r["seconds"] / h["engine"]["seconds"])
  if "loop" in h:
    row("per-client loop of the jitted client (run_round_reference)", h["loop"],
        h["speedup_vs_loop"])
  if "pytorch" in h:
    p = h["pytorch"]
    note = "" if p["clients_timed"] == h["clients"] else f", {p['clients_timed']} clients timed, scaled"
    row(f"PyTorch HubertModel per-client loop ({p['threads']} thread(s){note})", p,
        h["speedup_vs_pytorch"])
  if "drjax" in h:
    row("DrJAX (drjax.map_fn over each depth group, then the per-layer weighted mean)",
        h["drjax"], h["speedup_vs_drjax"])
  if "flower" in h:
    f = h["flower"]
    row(f"Flower simulation of the PyTorch loop ({f['actors']} Ray actors x 1 CPU, "
        f"{f['threads_per_actor']} torch thread each; first round {f['first_round_seconds']:.3g} s "
        f"incl. start-up)", f, h["speedup_vs_flower"])
  if h.get("cache_features_seconds") is not None:
    lines.append(f"\nOne-off conv-feature cache for all {h['clients']} clients (incl. compile): "
                 f"{h['cache_features_seconds']:.2f} s.")
  if "cohorts" in res:
    _cohort_md(res, lines)
  if "backbones" in res:
    _backbone_md(res, lines)
  if "depths" in res:
    _depth_md(res, lines)
  if "limits" in res:
    _limits_md(res, lines)
  return "\n".join(lines) + "\n"


def _cohort_md(res, lines):
  lines += ["", "## Cohort scaling (engine, default chunk)", "",
            "| clients | chunk | s / round | client updates / s | examples / s | temp MiB (default chunk) | temp MiB (chunk = K) | args MiB |",
            "|---|---|---|---|---|---|---|---|"]
  for r in res["cohorts"]:
    md, ma = r.get("memory_default_chunk", {}), r.get("memory_chunk_all", {})
    lines.append(f"| {r['clients']} | {r['chunk']} | {r['seconds']:.3g} | "
                 f"{r['client_updates_per_s']:.3g} | {r['examples_per_s']:.3g} | "
                 f"{_fmt_bytes(md.get('temp_bytes'))} | {_fmt_bytes(ma.get('temp_bytes'))} | "
                 f"{_fmt_bytes(md.get('argument_bytes'))} |")


def _backbone_md(res, lines):
  lines += ["", "## Backbone scaling", "",
            "| preset | hidden | params | clients | s / round | examples / s | temp MiB | args MiB |",
            "|---|---|---|---|---|---|---|---|"]
  for r in res["backbones"]:
    lines.append(f"| {r['preset']} | {r['hidden_size']} | {r['params'] / 1e6:.2f} M | "
                 f"{r['clients']} | {r['seconds']:.3g} | {r['examples_per_s']:.3g} | "
                 f"{_fmt_bytes(r['memory'].get('temp_bytes'))} | "
                 f"{_fmt_bytes(r['memory'].get('argument_bytes'))} |")


def _depth_md(res, lines):
  lines += ["", "## Depth savings (one client's local training)", "",
            "| depth | s | GFLOPs | time / depth-12 time | FLOPs / depth-12 FLOPs |", "|---|---|---|---|---|"]
  for r in res["depths"]:
    lines.append(f"| {r['depth']} | {r['seconds']:.3g} | {r['flops'] / 1e9:.3g} | "
                 f"{r['time_ratio']:.2f} | {r['flop_ratio']:.2f} |")


def _limits_md(res, lines):
  lim = res["limits"]
  tm = lim["tree_mean"]
  lines += ["", "## Distance to the limit", "",
            f"- Round: {lim['round_flops_per_s'] / 1e9:.3g} GFLOP/s vs a {lim['matmul']['n']}^2 "
            f"matmul {lim['matmul']['flops_per_s'] / 1e9:.3g} GFLOP/s: "
            f"**{100 * lim['round_vs_matmul']:.0f}%** (target >= 50% on CPU).",
            f"- Masked tree-mean over {tm['clients']} clients ({tm['stacked_bytes'] / 2**20:.0f} MiB "
            f"stacked): {tm['tree_mean_bytes_per_s'] / 1e9:.3g} GB/s vs copy "
            f"{tm['copy_bytes_per_s'] / 1e9:.3g} GB/s: **{100 * tm['ratio']:.0f}%** (target >= 50%)."]


SECTIONS = ("round", "cohorts", "backbones", "depths", "limits")


def run(mode: str, tiny: bool = False, out: Path | None = None, with_torch: bool = True,
        reps: int | None = None, sections=SECTIONS, note: str = "", log=print,
        with_flower: bool = True, hidden: int | None = None) -> dict[str, Any]:
  """The sections of `mode` ("quick", "full" or "gpu"); writes JSON (+ markdown) to `out`.
  "round" always runs (the other sections compare against it); `hidden` widens its workload."""
  unknown = set(sections) - set(SECTIONS)
  if unknown:
    raise ValueError(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
  p = plan(mode, tiny)
  if hidden is not None:
    p = dataclasses.replace(p, headline=widen(p.headline, hidden))
  reps = reps or p.reps
  t0 = time.perf_counter()
  res: dict[str, Any] = {"mode": p.name, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                         "machine": common.machine(), "reps": reps,
                         "workload": dataclasses.asdict(p.headline), "note": note,
                         "hidden_size": p.headline.config.hidden_size,
                         "sections": ["round"] + [x for x in SECTIONS[1:] if x in sections]}
  if with_torch and not _torch_usable():
    with_torch = False
  if with_flower and not (_flower_usable() and _torch_usable()):
    log("Flower row skipped: needs flwr[simulation] (pip install -e '.[peers]'), torch and a "
        "CPU run")
    with_flower = False
  bench = get_bench(p.headline, with_torch=True)
  log(f"[{time.perf_counter() - t0:.0f}s] round throughput at {p.headline.num_clients} clients")
  res["round"] = round_throughput(bench, reps, p.chunk_variants, p.torch_clients,
                                  with_torch=with_torch, torch_threads=p.torch_threads,
                                  with_flower=with_flower)
  if with_torch:  # now with torch's thread count; the load at start kept
    res["machine"] = {**common.machine(), "load_average_1m": res["machine"]["load_average_1m"]}
  res["machine"]["load_average_1m_after_round"] = common.machine()["load_average_1m"]
  if "cohorts" in sections:
    log(f"[{time.perf_counter() - t0:.0f}s] cohort scaling {p.cohorts}")
    res["cohorts"] = cohort_scaling(p.headline, p.cohorts, p.memory_cohorts, reps)
  if "backbones" in sections:
    log(f"[{time.perf_counter() - t0:.0f}s] backbone scaling")
    res["backbones"] = backbone_scaling(p.backbones, reps)
  if "depths" in sections:
    log(f"[{time.perf_counter() - t0:.0f}s] depth savings")
    res["depths"] = depth_savings(bench, reps)
  if "limits" in sections:
    log(f"[{time.perf_counter() - t0:.0f}s] hardware limits")
    res["limits"] = hardware_limits(bench, res["round"]["engine"]["seconds"], p.matmul_n,
                                    p.tree_mean_clients, reps)
  res["total_seconds"] = time.perf_counter() - t0
  if out is not None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float) + "\n")
    out.with_suffix(".md").write_text(markdown(res))
  return res


def summary_lines(res: dict[str, Any]) -> list[str]:
  h = res["round"]
  k = h["clients"]
  lines = []
  if "speedup_vs_loop" in h:
    lines.append(f"speedup vs per-client loop: {h['speedup_vs_loop']:.2f}x at {k} clients")
  if "speedup_vs_pytorch" in h:
    lines.append(f"speedup vs PyTorch loop: {h['speedup_vs_pytorch']:.2f}x at {k} clients")
  if "speedup_vs_drjax" in h:
    lines.append(f"speedup vs DrJAX: {h['speedup_vs_drjax']:.2f}x at {k} clients")
  if "speedup_vs_flower" in h:
    lines.append(f"speedup vs Flower: {h['speedup_vs_flower']:.2f}x at {k} clients")
  return lines


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--quick", action="store_true", help="small sizes: a couple of minutes on CPU")
  ap.add_argument("--gpu", action="store_true", help="the GPU table (refuses to run on CPU)")
  ap.add_argument("--allow-cpu", action="store_true", help="let --gpu run on a CPU (testing)")
  ap.add_argument("--tiny", action="store_true", help="tiny sizes, one repetition (smoke test)")
  ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
  ap.add_argument("--no-flower", action="store_true", help="skip the Flower simulation")
  ap.add_argument("--hidden", type=int, default=None,
                  help="width of the headline round's encoder (default: the preset's, 128); "
                       "results go to <name>_h<hidden>.json unless --out is given")
  ap.add_argument("--sections", default=",".join(SECTIONS),
                  help=f"comma-separated subset of {SECTIONS} (round always runs)")
  ap.add_argument("--note", default="", help="conditions to record with the results")
  ap.add_argument("--reps", type=int, default=None, help="timed rounds per figure")
  ap.add_argument("--out", type=Path, default=None,
                  help="results file (default benchmarks/results/{cpu,cpu_quick,gpu}.json)")
  ap.add_argument("--cpu-devices", default="auto",
                  help="on CPU, JAX devices to split the host into, as `fedexit run` does "
                       "(auto: one per core; 1: the engine on one device). The per-client JAX "
                       "loop runs on one device either way, as such loops do")
  a = ap.parse_args(argv)
  runtime.use_cpu_devices(a.cpu_devices if a.cpu_devices == "auto" else int(a.cpu_devices))
  mode = "gpu" if a.gpu else ("quick" if a.quick else "full")
  if a.gpu and jax.default_backend() == "cpu" and not a.allow_cpu:
    ap.error("--gpu: jax sees no GPU (backend cpu); pass --allow-cpu to run it anyway")
  out = a.out or RESULTS / ({"gpu": "gpu", "quick": "cpu_quick", "full": "cpu"}[mode]
                            + (f"_h{a.hidden}" if a.hidden else "") + ".json")
  res = run(mode, tiny=a.tiny, out=out, with_torch=not a.no_torch, with_flower=not a.no_flower,
            hidden=a.hidden,
            reps=1 if a.tiny and a.reps is None else a.reps,
            sections=tuple(x for x in a.sections.split(",") if x), note=a.note,
            log=lambda s: print(s, file=sys.stderr, flush=True))
  print(markdown(res))
  print(f"results: {out} ({res['total_seconds']:.0f} s)")
  for line in summary_lines(res):
    print(line)


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  main()
