"""Runs the paper's scenarios on the same data and seed and writes a Table-2-style markdown table.

Scenarios (paper-notes.md): homogeneous FL at each tier depth (every client at that depth),
heterogeneous FedAvg (`fedavg_naive`: shallow clients send back their untouched deep layers),
heterogeneous layer-wise aggregation (`paper`, Eq. 1), and the weighting ablations `samples`
(ReeFL), `uniform` (DepthFL) and `depth`.

  python experiments/paper_scenarios.py --workdir runs/scenarios [--config configs/default.py]
      [--only paper,fedavg_naive] [--config.rounds=40 ...] [--out experiments/results/x.md]

Every scenario is a full `train_and_evaluate` run in WORKDIR/<scenario>; a finished scenario is
reused (resumed at its last round), so an interrupted sweep continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from fedexit_jax import accounting, config_utils, metrics, train


def scenarios(config) -> dict[str, dict]:
  """name -> config overrides. Tier depths come from the base config's tiers."""
  tiers = [dict(t) for t in config.tiers]
  depths = sorted({int(t["max_depth"]) for t in tiers})
  out = {}
  for d in depths:
    out[f"homogeneous_{d}"] = {"tiers": [dict(fraction=1.0, max_depth=d, speed=1.0)],
                               "weighting": "homogeneous"}
  for w in ("fedavg_naive", "paper", "samples", "uniform", "depth"):
    out[w] = {"tiers": tiers, "weighting": w}
  return out


def run_scenario(base, name: str, overrides: dict, workdir: Path) -> dict:
  config = base.copy_and_resolve_references()
  with config.unlocked():
    for k, v in overrides.items():
      config[k] = v
  done = (workdir / "metrics.jsonl").exists() and any(
      r.get("round") == config.rounds for r in metrics.read_metrics(workdir))
  t0 = time.time()
  result = train.train_and_evaluate(config, workdir, resume=True)
  rows = metrics.read_metrics(workdir)
  sim = np.cumsum([r.get("sim_seconds", 0.0) for r in rows])
  result.update(name=name, weighting=config.weighting,
                depths="/".join(str(t["max_depth"]) for t in config.tiers),
                sim_seconds=float(sim[-1]) if len(sim) else 0.0,
                rows=rows, wall=time.time() - t0, reused=done)
  return result


def time_to(rows, target: float, exit_layer: str):
  sims = [r.get("sim_seconds", 0.0) for r in rows]
  return accounting.time_to_error(rows, sims, target, exit_layer)


def table(results: list[dict], exits: list[str], target: float) -> str:
  head = ["scenario", "weighting", "client depths"] + [f"error @ exit {e} %" for e in exits] + [
      f"sim. time to {100 * target:.0f}% error @ exit {exits[-1]} (s)", "sim. time / round (s)",
      "upload / round, deepest tier (MiB)"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in results:
    errs = [f"{100 * r['error'][e]:.2f}" if e in r["error"] else "n/a" for e in exits]
    t = time_to(r["rows"], target, exits[-1])
    up = max(t_["upload_bytes"] for t_ in r["tiers"]) / 2**20 if r["tiers"] else float("nan")
    per_round = r["sim_seconds"] / max(len(r["rows"]), 1)
    lines.append("| " + " | ".join([r["name"], r["weighting"], r["depths"], *errs,
                                     "not reached" if t is None else f"{t:.2f}",
                                     f"{per_round:.3f}", f"{up:.2f}"]) + " |")
  return "\n".join(lines)


def cost_table(results: list[dict]) -> str:
  seen, lines = set(), ["| depth | GFLOPs / local step | peak train memory (MiB) | upload (MiB) |",
                        "|---|---|---|---|"]
  for r in results:
    for t in r["tiers"]:
      if t["depth"] in seen:
        continue
      seen.add(t["depth"])
      lines.append(f"| {t['depth']} | {t['flops_per_step'] / 1e9:.2f} | "
                   f"{t['peak_memory_bytes'] / 2**20:.1f} | {t['upload_bytes'] / 2**20:.2f} |")
  return "\n".join([lines[0], lines[1]] + sorted(lines[2:], key=lambda s: int(s.split("|")[1])))


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  overrides, own = config_utils.split_config_args(argv)
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default=str(config_utils.default_config_path()))
  p.add_argument("--workdir", required=True, help="one sub-folder per scenario")
  p.add_argument("--only", default=None, help="comma-separated scenario names")
  p.add_argument("--target", type=float, default=0.5, help="error for the time-to-accuracy column")
  p.add_argument("--out", default=None, help="markdown file (default WORKDIR/scenarios.md)")
  args = p.parse_args(own)
  base = config_utils.load_config(args.config)
  base = config_utils.apply_overrides(base, overrides)
  with base.unlocked():
    base.progress_bar = False
  todo = scenarios(base)
  if args.only:
    names = args.only.split(",")
    unknown = sorted(set(names) - set(todo))
    if unknown:
      p.error(f"unknown scenarios {unknown}; choose from {sorted(todo)}")
    todo = {k: todo[k] for k in names}
  root = Path(args.workdir)
  results = []
  for name, ov in todo.items():
    print(f"== {name}", flush=True)
    r = run_scenario(base, name, ov, root / name)
    print(f"   error {r['error']}  ({r['wall']:.0f} s)", flush=True)
    results.append(r)
  exits = [str(e) for e in base.model.exits if any(str(e) in r["error"] for r in results)]
  cmd = "python experiments/paper_scenarios.py " + " ".join(argv)
  text = "\n".join([
      "# Paper scenarios on one corpus and seed", "",
      f"Command: `{cmd}`", "",
      f"Config: `{args.config}` with overrides {overrides or 'none'}; rounds: {base.rounds}, "
      f"clients: {base.data.num_clients}, per round: {base.clients_per_round}.", "",
      "Test error (%) of the global model on the central test set (held-out speakers) after the "
      "last round; simulated time from the tiers' relative speeds (a round waits for its slowest "
      "client).", "", table(results, exits, args.target), "",
      "## Cost per client depth (one local step; XLA cost and memory analysis)", "",
      cost_table(results), ""])
  out = Path(args.out) if args.out else root / "scenarios.md"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(text)
  (out.with_suffix(".json")).write_text(json.dumps(
      [{k: v for k, v in r.items() if k != "rows"} for r in results], indent=2, default=str))
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
