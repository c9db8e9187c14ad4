"""The paper's scenarios and the aggregation ablations, over several seeds, with paired intervals.

  python experiments/paper_scenarios.py --workdir runs/ablation --seeds 0-4
      [--config configs/default.py (or configs/sid.py, er.py, asr.py, kws35.py: any task)]
      [--only paper,fedavg_naive] [--deep-shares 10,30,70,90] [--replicas]
      [--config.rounds=40 ...] [--out experiments/results/x.md]

Scenarios (paper-notes.md), each run once per seed in WORKDIR/seed<s>/<scenario>:
  homogeneous_<d>  every client at tier depth d (the paper's homogeneous FL rows)
  fedavg_naive     heterogeneous FedAvg: shallow clients send back their untouched deep layers
  paper            layer-wise aggregation, Eq. 1 (weights n_i * L_i over the clients that
                   trained the layer)
  samples          the same masks, weights n_i: ReeFL's sample-weighted mean
  uniform          the same masks, weight 1: DepthFL's count mean
  depth            the same masks, weights L_i
  centralized      upper bound: all clients' training data pooled into one client (IID), one
                   model at the deepest tier's depth trained on every tier exit (loss "all"),
                   with the `paper` run's total local steps (same seed) spread over the same
                   rounds; Adam restarts each round, as for any FedAvg client
  <scheme>@deep<p> paper and fedavg_naive with p% of the clients in the deep tier (--deep-shares)

A seed (config `seed`) moves the partition, the tiers' assignment, the sampled cohorts, local
shuffles and the init together; every scenario of one seed shares them, so scheme differences are
paired by seed. The corpus and its held-out test speakers are fixed (data.seed). Finished runs are
reused (resumed at their last round), so an interrupted sweep continues where it stopped.

--replicas: the runs that can share one compiled round program (the same scenario up to seed and
scheme: the schemes at one tier mix, over every seed whose partition pads alike) train together
(fedexit_jax.replica_train); each still writes its own WORKDIR/seed<s>/<scenario>, identical to
a separate run's to float tolerance. The centralized bound runs alone, after its seed's paper run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from fedexit_jax import checkpoint, config_utils, metrics, replica_train, stats, tasks, train

SCHEME_LABELS = {"fedavg_naive": "hetero FedAvg (whole model)", "paper": "layer-wise, Eq. 1",
                 "samples": "samples (ReeFL)", "uniform": "uniform (DepthFL)", "depth": "depth"}


def parse_seeds(text: str) -> list[int]:
  """'0,1,2', '0-4' (inclusive) or a mix: '0-2,7' -> [0, 1, 2, 7]."""
  out = []
  for part in text.split(","):
    part = part.strip()
    if not part:
      continue
    if "-" in part:
      lo, hi = (int(x) for x in part.split("-", 1))
      if hi < lo:
        raise ValueError(f"seed range {part!r} runs backwards")
      out.extend(range(lo, hi + 1))
    else:
      out.append(int(part))
  if not out or len(set(out)) != len(out):
    raise ValueError(f"--seeds {text!r}: give distinct seeds, e.g. 0-4 or 0,1,2")
  return out


def scenarios(config, deep_shares=()) -> dict[str, dict]:
  """name -> config overrides. Tier depths come from the base config's tiers."""
  tiers = [dict(t) for t in config.tiers]
  depths = sorted({int(t["max_depth"]) for t in tiers})
  out = {}
  for w in ("paper", "fedavg_naive", "samples", "uniform", "depth"):
    out[w] = {"tiers": tiers, "weighting": w}
  for d in depths:
    out[f"homogeneous_{d}"] = {"tiers": [dict(fraction=1.0, max_depth=d, speed=1.0)],
                               "weighting": "homogeneous"}
  deep = max(tiers, key=lambda t: t["max_depth"])
  out["centralized"] = {"tiers": [dict(deep, fraction=1.0)], "weighting": "samples",
                        "loss": "all", "data.partition": "iid", "data.num_clients": 1,
                        "clients_per_round": 1}
  if deep_shares:
    if len(tiers) != 2:
      raise ValueError(f"--deep-shares needs exactly two tiers, the config has {len(tiers)}")
    shallow = min(tiers, key=lambda t: t["max_depth"])
    for share in deep_shares:
      f = share / 100
      for w in ("paper", "fedavg_naive"):
        out[f"{w}@deep{share}"] = {"tiers": [dict(shallow, fraction=round(1 - f, 6)),
                                             dict(deep, fraction=f)], "weighting": w}
  return out


def _configure(base, overrides: dict):
  config = base.copy_and_resolve_references()
  with config.unlocked():
    for k, v in overrides.items():
      node = config
      *parents, leaf = k.split(".")
      for p in parents:
        node = node[p]
      node[leaf] = v
  return config


def _finished(config, workdir: Path) -> bool:
  return (workdir / "metrics.jsonl").exists() and any(
      r.get("round") == config.rounds for r in metrics.read_metrics(workdir))


def run_scenario(base, name: str, overrides: dict, workdir: Path) -> dict:
  config = _configure(base, overrides)
  done = _finished(config, workdir)
  if done and not checkpoint.all_steps(workdir):  # metrics kept without checkpoints (committed
    return read_finished(base, name, overrides, workdir)  # results): read, never retrained
  t0 = time.time()
  result = train.train_and_evaluate(config, workdir, resume=True)
  return _result(config, name, result, workdir, time.time() - t0, done)


def run_replica_groups(base, todo: dict, seeds: list[int], root: Path) -> None:
  """Trains every unfinished run of `todo` x `seeds` (but centralized) in replica groups: the
  runs of one scenario up to seed and scheme share a program (replica_train)."""
  groups: dict[str, list[tuple[str, int]]] = {}
  for name, ov in todo.items():
    if name == "centralized":
      continue
    key = json.dumps({k: v for k, v in ov.items() if k != "weighting"}, sort_keys=True)
    for seed in seeds:
      if not _finished(_configure(base, dict(ov, seed=seed)), root / f"seed{seed}" / name):
        groups.setdefault(key, []).append((name, seed))
  for runs in groups.values():
    print("== replicas: " + ", ".join(f"seed {s} {n}" for n, s in runs), flush=True)
    t0 = time.time()
    replica_train.train_replicas([_configure(base, dict(todo[n], seed=s)) for n, s in runs],
                                 [root / f"seed{s}" / n for n, s in runs], progress=False)
    print(f"   {len(runs)} runs in {time.time() - t0:.0f} s", flush=True)


def _result(config, name: str, result: dict, workdir: Path, wall: float, reused: bool) -> dict:
  rows = metrics.read_metrics(workdir)
  result.update(error=result[compared_metric(config)], name=name, weighting=config.weighting,
                depths="/".join(str(t["max_depth"]) for t in config.tiers),
                sim_seconds=float(sum(r.get("sim_seconds", 0.0) for r in rows)),
                local_steps=int(sum(r.get("local_steps", 0) for r in rows)),
                rows=rows, wall=wall, reused=reused)
  return result


def read_finished(base, name: str, overrides: dict, workdir: Path) -> dict | None:
  """A finished run's result from its metrics.jsonl alone (no JAX, no data): for --report-only.
  None if the run has not reached its last round."""
  config = _configure(base, overrides)
  rows = metrics.read_metrics(workdir) if (workdir / "metrics.jsonl").exists() else []
  key = compared_metric(config)
  last = [r for r in rows if r.get("round") == config.rounds and key in r]
  if not last:
    return None
  return dict(name=name, weighting=config.weighting, error=last[-1][key], tiers=[],
              depths="/".join(str(t["max_depth"]) for t in config.tiers),
              sim_seconds=float(sum(r.get("sim_seconds", 0.0) for r in rows)),
              local_steps=int(sum(r.get("local_steps", 0) for r in rows)),
              rows=rows, wall=0.0, reused=True)


def compared_metric(config) -> str:
  """The task's primary metric ("error"; "wer" for ASR): what the tables compare (stored under
  the results' "error" key whatever its name)."""
  return tasks.get(config.task).primary


def steps_budget(paper_result: dict, rounds: int) -> int:
  """Local steps per round that give a one-client run the `paper` run's total local steps."""
  total = paper_result["local_steps"]
  if total <= 0:
    raise ValueError("the paper run logged no local steps (metrics.jsonl lacks 'local_steps'); "
                     "rerun it")
  return max(1, int(round(total / rounds)))


def _pct(x: float) -> str:
  return f"{100 * x:.2f}"


def _ci(ci: stats.Interval) -> str:
  if ci.low is None:
    return f"{_pct(ci.mean)} (1 seed)"
  return f"{_pct(ci.mean)} ± {_pct(ci.half_width)}"


def _diff(p: stats.Paired) -> str:
  if p.diff.low is None:
    return f"{100 * p.diff.mean:+.2f} (1 seed)"
  return (f"{100 * p.diff.mean:+.2f} [{100 * p.diff.low:+.2f}, {100 * p.diff.high:+.2f}], "
          f"p={p.p_value:.3f}, {p.wins}/{p.diff.n} lower")


def errors_by_seed(results: dict, name: str, exit_: str, seeds: list[int]) -> list[float] | None:
  vals = [results.get(name, {}).get(s, {}).get("error", {}).get(exit_) for s in seeds]
  return None if any(v is None for v in vals) else vals


def summary_tables(results: dict, seeds: list[int], exits: list[str], shares=(),
                   metric: str = "error") -> str:
  """Markdown: per-scenario means with intervals, paired differences to `paper`, the paper's
  ordering per exit in words, and the deep-share sweep."""
  lines = [f"### Test {metric} % (mean ± 95% t-interval over {len(seeds)} seeds: {seeds})", "",
           "| scenario | rule | client depths | " + " | ".join(f"exit {e}" for e in exits)
           + " | sim. s / round | upload / round, deepest tier (MiB) |",
           "|---|---|---|" + "---|" * len(exits) + "---|---|"]
  for name, per_seed in results.items():
    if "@deep" in name:
      continue
    any_r = next(iter(per_seed.values()))
    cells = []
    for e in exits:
      v = errors_by_seed(results, name, e, seeds)
      cells.append("n/a" if v is None else _ci(stats.mean_ci(v)))
    sim = np.mean([r["sim_seconds"] / max(len(r["rows"]), 1) for r in per_seed.values()])
    up = (f'{max(t["upload_bytes"] for t in any_r["tiers"]) / 2**20:.2f}' if any_r["tiers"]
          else "n/a")
    lines.append(f"| {name} | {SCHEME_LABELS.get(any_r['weighting'], any_r['weighting'])} | "
                 f"{any_r['depths']} | " + " | ".join(cells) + f" | {sim:.3f} | {up} |")
  lines += ["", "### Paired difference to `paper` (scheme − paper, error points; negative: the "
            "scheme is better), 95% t-interval, paired t-test p, seeds where the scheme is lower",
            "", "| scheme | " + " | ".join(f"exit {e}" for e in exits) + " |",
            "|---|" + "---|" * len(exits)]
  for name in results:
    if name == "paper" or "@deep" in name:
      continue
    cells = []
    for e in exits:
      a, b = errors_by_seed(results, name, e, seeds), errors_by_seed(results, "paper", e, seeds)
      cells.append("n/a" if a is None or b is None else _diff(stats.paired_difference(a, b)))
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += ["", "### The paper's ordering, per exit", ""]
  for e in exits:
    p, naive = errors_by_seed(results, "paper", e, seeds), errors_by_seed(results, "fedavg_naive",
                                                                          e, seeds)
    if p is not None and naive is not None:
      d = stats.paired_difference(p, naive)
      lines.append(f"- exit {e}: layer-wise (paper) vs hetero FedAvg: paper − FedAvg = "
                   f"{_diff(d)}; paper is {stats.verdict(d)}.")
    homo = errors_by_seed(results, f"homogeneous_{e}", e, seeds)
    if p is not None and homo is not None:
      d = stats.paired_difference(p, homo)
      lines.append(f"- exit {e}: layer-wise (paper) vs homogeneous depth {e}: paper − homogeneous "
                   f"= {_diff(d)}; paper is {stats.verdict(d)}.")
  if shares:
    lines += ["", "### Deep-tier share: paper − hetero FedAvg (error points, paired by seed)", "",
              "| deep share | " + " | ".join(f"exit {e}" for e in exits) + " |",
              "|---|" + "---|" * len(exits)]
    for share in shares:
      pa, na = ("paper", "fedavg_naive") if share == 50 else (f"paper@deep{share}",
                                                               f"fedavg_naive@deep{share}")
      if pa not in results or na not in results:
        continue
      cells = []
      for e in exits:
        a, b = errors_by_seed(results, pa, e, seeds), errors_by_seed(results, na, e, seeds)
        cells.append("n/a" if a is None or b is None else _diff(stats.paired_difference(a, b)))
      lines.append(f"| {share}% | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def cost_table(results: dict) -> str:
  seen, lines = set(), ["| depth | GFLOPs / local step | peak train memory (MiB) | upload (MiB) |",
                        "|---|---|---|---|"]
  for per_seed in results.values():
    for r in per_seed.values():
      for t in r["tiers"]:
        if t["depth"] in seen:
          continue
        seen.add(t["depth"])
        lines.append(f"| {t['depth']} | {t['flops_per_step'] / 1e9:.2f} | "
                     f"{t['peak_memory_bytes'] / 2**20:.1f} | {t['upload_bytes'] / 2**20:.2f} |")
  return "\n".join(lines[:2] + sorted(lines[2:], key=lambda s: int(s.split("|")[1])))


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  overrides, own = config_utils.split_config_args(argv)
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default=str(config_utils.default_config_path()))
  p.add_argument("--workdir", required=True, help="one sub-folder per seed and scenario")
  p.add_argument("--seeds", default="0", help="seeds: '0-4', '0,1,2' or a mix (default 0)")
  p.add_argument("--only", default=None, help="comma-separated scenario names")
  p.add_argument("--deep-shares", default="", help="deep-tier shares in %% for the paper vs "
                 "hetero FedAvg sweep, e.g. 10,30,70,90 (50 is the base scenario)")
  p.add_argument("--replicas", action="store_true", help="train the runs that can share a "
                 "compiled round program (same scenario up to seed and scheme) together")
  p.add_argument("--report-only", action="store_true", help="write the tables from the runs "
                 "already finished in WORKDIR (seeds missing a scenario are left out); trains "
                 "nothing")
  p.add_argument("--out", default=None, help="markdown file (default WORKDIR/scenarios.md); a "
                 ".json with every seed's numbers is written beside it")
  args = p.parse_args(own)
  try:
    seeds = parse_seeds(args.seeds)
    shares = [int(s) for s in args.deep_shares.split(",") if s.strip()]
  except ValueError as e:
    p.error(str(e))
  if any(not 0 < s < 100 for s in shares):
    p.error(f"--deep-shares must lie strictly between 0 and 100, got {shares}")
  base = config_utils.apply_overrides(config_utils.load_config(args.config), overrides)
  with base.unlocked():
    base.progress_bar = False
  todo = scenarios(base, [s for s in shares if s != 50])
  if args.only:
    names = args.only.split(",")
    unknown = sorted(set(names) - set(todo))
    if unknown:
      p.error(f"unknown scenarios {unknown}; choose from {sorted(todo)}")
    if "centralized" in names and "paper" not in names:
      names = ["paper"] + names  # the centralized budget is the paper run's steps
    todo = {k: todo[k] for k in todo if k in names}
  root = Path(args.workdir)
  results: dict[str, dict[int, dict]] = {name: {} for name in todo}
  if args.replicas and not args.report_only:
    run_replica_groups(base, todo, seeds, root)  # then the loop below reuses the finished runs
  for seed in seeds:
    for name, ov in todo.items():
      ov = dict(ov, seed=seed)
      if args.report_only:
        r = read_finished(base, name, ov, root / f"seed{seed}" / name)
        if r is not None:
          results[name][seed] = r
        continue
      if name == "centralized":
        ov["local_steps"] = steps_budget(results["paper"][seed], base.rounds)
      print(f"== seed {seed} {name}", flush=True)
      r = run_scenario(base, name, ov, root / f"seed{seed}" / name)
      print(f"   error {r['error']}  ({r['wall']:.0f} s{', reused' if r['reused'] else ''})",
            flush=True)
      results[name][seed] = r
  if args.report_only:  # keep the seeds every scenario finished, so differences stay paired
    seeds = [s for s in seeds if all(s in per for per in results.values())]
    if not seeds:
      p.error(f"no seed has finished every scenario of {sorted(todo)} in {root}")
    results = {k: {s: r for s, r in per.items() if s in seeds} for k, per in results.items()}
  exits = [str(e) for e in base.model.exits
           if any(str(e) in r["error"] for per in results.values() for r in per.values())]
  cmd = "python experiments/paper_scenarios.py " + " ".join(argv)
  text = "\n".join([
      f"# Paper scenarios and aggregation ablations over {len(seeds)} seed(s)", "",
      f"Command: `{cmd}`", "",
      f"Config: `{args.config}` with overrides {overrides or 'none'}; rounds: {base.rounds}, "
      f"clients: {base.data.num_clients} ({base.data.partition} partition), per round: "
      f"{base.clients_per_round}, backbone: {base.model.checkpoint}.", "",
      f"Test {compared_metric(base)} of the global model on the central test set after the last "
      "round. A seed fixes the partition, tiers, cohorts and init for every scenario, so "
      "differences are paired by seed. Simulated time from the tiers' relative speeds (a round "
      "waits for its slowest client).", "",
      summary_tables(results, seeds, exits, shares, compared_metric(base)), "",
      "## Cost per client depth (one local step; XLA cost and memory analysis)", "",
      cost_table(results) if not args.report_only else "(not in --report-only tables)", ""])
  out = Path(args.out) if args.out else root / "scenarios.md"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(text)
  per_seed = {name: {str(s): {"error": r["error"], "wall_seconds": r["wall"],
                              "sim_seconds": r["sim_seconds"], "local_steps": r["local_steps"]}
                     for s, r in per.items()} for name, per in results.items()}
  out.with_suffix(".json").write_text(json.dumps(
      {"command": cmd, "seeds": seeds, "exits": exits, "results": per_seed}, indent=2))
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
