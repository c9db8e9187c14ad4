"""Compute, memory, upload and simulated wall-clock per device tier: the paper's efficiency
claims made measurable.

Everything here takes a step function plus example arguments, or a params tree, so it does not
depend on how the engine builds its steps.

FLOPs: XLA's own cost analysis of the compiled step. XLA counts the body of a loop once, not
once per iteration, so a `lax.scan` over 12 layers would count like one layer and every depth
would look alike. `step_flops` therefore rewrites the step's jaxpr with every scan fully unrolled
and analyses the lowered HLO (the arithmetic is unchanged, and nothing is compiled, so it is
quick). `while_loop`s with a data-dependent trip count cannot be unrolled and stay counted once:
keep them out of the step.

Memory: `compiled.memory_analysis()` of the step as it really runs (scans not unrolled): XLA's
buffer assignment for arguments (params, optimizer state, batch), outputs and temporaries
(activations kept for the backward pass, gradients, workspace). Their sum minus aliased
(donated) bytes is the peak the device must hold for one training step of a depth-d model: the
analogue of the paper's Table 3 (training memory at depth 3/6/9/12). Pass a step whose arguments
hold only what a depth-d device holds (layers[:d]) to count it that way.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.extend import core as jcore

from fedexit_jax.federated.model import path_keys


# ----------------------------------------------------------------------------- XLA analyses


def _unroll_scans(jaxpr: jcore.Jaxpr) -> jcore.Jaxpr:
  """The same jaxpr with every scan fully unrolled, recursively (jit, remat, cond, vjp...)."""

  def fix(v: Any) -> Any:
    if isinstance(v, jcore.ClosedJaxpr):
      return v.replace(jaxpr=_unroll_scans(v.jaxpr))
    if isinstance(v, jcore.Jaxpr):
      return _unroll_scans(v)
    if isinstance(v, tuple) and v and all(isinstance(x, jcore.ClosedJaxpr) for x in v):
      return tuple(fix(x) for x in v)
    return v

  eqns = []
  for eqn in jaxpr.eqns:
    params = {k: fix(v) for k, v in eqn.params.items()}
    if eqn.primitive.name == "scan":
      params["unroll"] = 0  # the scan primitive's "fully unrolled": no loop, no trip counter
    eqns.append(eqn.replace(params=params))
  return jaxpr.replace(eqns=eqns)


def _first(analysis: Any) -> Mapping[str, float]:
  """cost_analysis() is a dict in new jax, a list with one dict per computation in old jax."""
  if analysis is None:
    return {}
  if isinstance(analysis, (list, tuple)):
    return analysis[0] if analysis else {}
  return analysis


def cost_analysis(fn: Callable, *args: Any, unroll_scans: bool = True,
                  optimized: bool = False) -> dict[str, float]:
  """XLA's cost analysis of `jax.jit(fn)(*args)`: {"flops", "transcendentals",
  "bytes_accessed"}, with scans unrolled so that every iteration counts (see module doc).

  By default the HLO is analysed as lowered, before XLA's optimisations: the FLOPs of the program
  as written. After optimisation (`optimized=True`) an unrolled program's fusions may recompute
  cheap elementwise producers, which inflates the count superlinearly in the depth.
  """
  if unroll_scans:
    closed = jax.make_jaxpr(fn)(*args)
    closed = closed.replace(jaxpr=_unroll_scans(closed.jaxpr))
    fn, args = jcore.jaxpr_as_fun(closed), tuple(jax.tree.leaves(args))
  lowered = jax.jit(fn).lower(*args)
  ca = None if optimized else _first(lowered.cost_analysis())
  if not ca:  # optimized, or a backend that analyses only compiled programs
    ca = _first(lowered.compile().cost_analysis())
  return {"flops": float(ca.get("flops", 0.0)),
          "transcendentals": float(ca.get("transcendentals", 0.0)),
          "bytes_accessed": float(ca.get("bytes accessed", 0.0))}


def step_flops(step_fn: Callable, *args: Any) -> float:
  """FLOPs of one call of `step_fn(*args)` (e.g. one local training step at a fixed depth).

  `args` are pytrees of arrays (or ShapeDtypeStructs); close over static arguments
  (depth, config) with functools.partial or a lambda."""
  return cost_analysis(step_fn, *args)["flops"]


def step_memory(step_fn: Callable, *args: Any,
                donate_argnums: int | Sequence[int] = ()) -> dict[str, int]:
  """Bytes XLA assigns to one call of `step_fn(*args)`: argument, output, temp, alias, and
  peak = argument + output + temp - alias (or XLA's own peak figure where it gives one).

  A training step returns new params and optimizer state as large as its inputs; donate them
  (`donate_argnums`, as a real training loop does) so that the outputs reuse the inputs' buffers
  and are not counted twice.
  """
  m = jax.jit(step_fn, donate_argnums=donate_argnums).lower(*args).compile().memory_analysis()
  if m is None:
    raise RuntimeError(f"memory_analysis() is unavailable on backend {jax.default_backend()!r}")
  out = {"argument_bytes": int(m.argument_size_in_bytes),
         "output_bytes": int(m.output_size_in_bytes),
         "temp_bytes": int(m.temp_size_in_bytes),
         "alias_bytes": int(m.alias_size_in_bytes)}
  total = out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
  peak = int(getattr(m, "peak_memory_in_bytes", 0) or 0)
  out["peak_bytes"] = max(peak, total) if peak else total
  return out


# ----------------------------------------------------------------------------- upload


def _nbytes(leaf: Any) -> int:
  return int(math.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize


def tree_bytes(tree: Any) -> int:
  return sum(_nbytes(x) for x in jax.tree.leaves(tree))


def upload_bytes(params: Any, depth: int, exits: Sequence[int], *,
                 train_feature_encoder: bool = False, whole_model: bool = False,
                 deepest_only: bool = False) -> int:
  """Bytes a client of maximum depth `depth` sends back after a round.

  `params` is the global model tree: the backbone (feature_extractor, feature_projection,
  encoder/{pos_conv, layer_norm, layers}) and, anywhere under a "heads" key, the exit heads
  stacked over exits (leading axis len(exits)). The client sends what it trained: everything but
  the frozen feature_extractor (unless `train_feature_encoder`), the first `depth` of the stacked
  encoder layers (leading axis = num layers), and the heads it trained: every exit <= depth, or
  with `deepest_only` (the paper's loss on the deepest exit) only the exit at its depth.
  `whole_model`: the `fedavg_naive` baseline, where every client returns the whole model.
  """
  exits = list(exits)
  n_heads = 1 if deepest_only else sum(e <= depth for e in exits)
  total = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = [str(k) for k in path_keys(path)]
    if "feature_extractor" in keys and not train_feature_encoder:
      continue
    nbytes = _nbytes(leaf)
    if whole_model:
      total += nbytes
    elif "heads" in keys:
      if leaf.shape[0] != len(exits):
        raise ValueError(f"head leaf {'/'.join(keys)} has leading axis {leaf.shape[0]}, "
                         f"expected one row per exit {exits}")
      total += nbytes // len(exits) * n_heads
    elif "layers" in keys and "encoder" in keys:
      layers = leaf.shape[0]
      if depth > layers:
        raise ValueError(f"depth {depth} exceeds the {layers} stacked layers of "
                         f"{'/'.join(keys)}")
      total += nbytes // layers * depth
    else:
      total += nbytes
  return total


# ----------------------------------------------------------------------------- wall-clock


def client_time(flops_per_step: float, steps: int, speed: float,
                flops_per_second: float = 1.0) -> float:
  """Seconds a client of relative `speed` needs for `steps` local steps."""
  return flops_per_step * steps / (speed * flops_per_second)


def round_time(depths: Sequence[int], steps: Sequence[int] | int, speeds: Sequence[float],
               flops_by_depth: Mapping[int, float], flops_per_second: float = 1.0) -> float:
  """Simulated wall-clock of one synchronous round: it waits for its slowest sampled client,
  max_i flops(depth_i) * steps_i / (speed_i * flops_per_second). Communication is not counted."""
  depths = list(depths)
  steps = [steps] * len(depths) if isinstance(steps, (int, np.integer)) else list(steps)
  speeds = list(speeds)
  if not (len(depths) == len(steps) == len(speeds)):
    raise ValueError(f"depths, steps and speeds differ in length: "
                     f"{len(depths)}, {len(steps)}, {len(speeds)}")
  missing = sorted({d for d in depths if d not in flops_by_depth})
  if missing:
    raise ValueError(f"no FLOPs measured for depth(s) {missing}; have {sorted(flops_by_depth)}")
  times = [client_time(flops_by_depth[d], s, v, flops_per_second)
           for d, s, v in zip(depths, steps, speeds)]
  return max(times, default=0.0)


def time_to_error(rows: Sequence[Mapping[str, Any]], round_times: Sequence[float],
                  target: float, exit_layer: int | str) -> float | None:
  """Simulated seconds until the test error at `exit_layer` first reaches <= target.

  rows: metrics.jsonl rows ({"round": r, "error": {...}}); round_times[r - 1] is round r's
  simulated time. None if never reached.
  """
  cum = np.cumsum(np.asarray(round_times, np.float64))
  key = str(exit_layer)
  for row in rows:
    err = (row.get("error") or {}).get(key)
    if err is not None and err <= target:
      r = int(row["round"])
      if r > len(cum):
        raise ValueError(f"round {r} has no simulated time (only {len(cum)} rounds given)")
      return float(cum[r - 1]) if r > 0 else 0.0
  return None


def tier_table(tiers: Sequence[Mapping[str, Any]], flops_by_depth: Mapping[int, float],
               memory_by_depth: Mapping[int, Mapping[str, int]] | None = None,
               upload_by_depth: Mapping[int, int] | None = None) -> list[dict[str, Any]]:
  """One row per tier (config.tiers entries) with its depth's measured costs, for the summary
  and plots.tier_costs: {"tier", "depth", "fraction", "speed", "flops_per_step",
  "peak_memory_bytes", "upload_bytes", "relative_step_time"} (step time relative to the
  fastest tier's)."""
  rows = []
  for i, t in enumerate(tiers):
    d = int(t["max_depth"])
    mem = (memory_by_depth or {}).get(d)
    rows.append({"tier": f"tier {i} (depth {d})", "depth": d, "fraction": float(t["fraction"]),
                 "speed": float(t["speed"]), "flops_per_step": flops_by_depth.get(d),
                 "peak_memory_bytes": None if mem is None else mem["peak_bytes"],
                 "upload_bytes": (upload_by_depth or {}).get(d)})
  times = [r["flops_per_step"] / r["speed"] for r in rows if r["flops_per_step"]]
  for r in rows:
    r["relative_step_time"] = (r["flops_per_step"] / r["speed"] / min(times)
                               if r["flops_per_step"] and times else None)
  return rows


def markdown_tier_table(rows: Sequence[Mapping[str, Any]]) -> str:
  """The per-tier cost table in markdown (GFLOPs per step, MiB of memory and upload)."""
  head = ("| tier | depth | clients | speed | GFLOPs / step | peak train memory (MiB) | "
          "upload / round (MiB) |")
  out = [head, "|---|---|---|---|---|---|---|"]

  def fmt(x, scale):
    return "-" if x is None else f"{x / scale:.3g}"

  for r in rows:
    out.append(f"| {r['tier']} | {r['depth']} | {100 * r['fraction']:.0f}% | {r['speed']:g} | "
               f"{fmt(r['flops_per_step'], 1e9)} | {fmt(r['peak_memory_bytes'], 2**20)} | "
               f"{fmt(r['upload_bytes'], 2**20)} |")
  return "\n".join(out)
