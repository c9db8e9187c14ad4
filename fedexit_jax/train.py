"""train_and_evaluate(config, workdir): the one function `fedexit run` and the experiments call.

A run: validate the config and the workdir -> corpus -> clients and their depths -> (cached conv
features) -> rounds of the compiled federated engine, evaluated on the central test set at every
trained exit, checkpointed every k rounds -> summary.md, plots, metrics.jsonl, TensorBoard.
Everything a resumed run needs is in the checkpoint (server params, optimizer state, round, RNG)
and in the config, so a resumed run writes exactly the rows an uninterrupted run writes.
"""
from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from fedexit_jax import (accounting, checkpoint, config_utils, metrics, models, pipeline, plots,
                         runtime)
from fedexit_jax import federated as fl
from fedexit_jax.federated import client as client_lib
from fedexit_jax.federated import trees

log = logging.getLogger(__name__)


class DivergedError(RuntimeError):
  """The global model is no longer finite."""


def _step_costs(spec: fl.RoundSpec, params: Any, clients: fl.ClientData, depths, weighting: str
                ) -> dict[int, dict[str, Any]]:
  """Per depth: FLOPs and peak memory of one local step (XLA), bytes a client uploads."""
  exits, b = spec.client.exits, spec.client.batch_size
  batch = fl.ClientData(*(np.asarray(a[0, :b]) for a in clients))
  out = {}
  for d in sorted(set(int(x) for x in depths)):
    anchor = spec.client.slice_params(params, d)
    state = client_lib.client_init(spec.client, anchor)
    step = functools.partial(client_lib.client_step, spec.client, d, anchor,
                             key=jax.random.key(0) if spec.client.time_mask_prob else None)
    out[d] = {"flops": accounting.step_flops(step, state, batch),
              "memory": accounting.step_memory(step, state, batch, donate_argnums=(0,)),
              "upload": accounting.upload_bytes(params, d, exits,
                                                train_feature_encoder=spec.client.model.train_feature_encoder,
                                                whole_model=weighting == "fedavg_naive",
                                                deepest_only=spec.client.deepest_only)}
  return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path,
                       resume: bool = False) -> dict[str, Any]:
  """Runs (or resumes) a federated run in `workdir`; returns the last evaluation and the costs."""
  encoder = config_utils.validate_config(config)
  pipeline.preflight(config)
  runtime.use_distributed(config.distributed)  # multi-process: join the others, first thing
  cpu_devices = runtime.use_cpu_devices(config.cpu_devices)  # before JAX runs anything
  runtime.use_compilation_cache(config.compilation_cache)  # and before it compiles
  primary = runtime.is_primary()  # writes the files; every process trains and checkpoints
  workdir = Path(workdir)
  start = checkpoint.check_workdir(workdir, config, resume, write_config=primary)
  runtime.barrier("workdir checked")  # damaged rounds set aside before anyone restores
  t0 = time.time()
  rng_model, rng_server = jax.random.split(jax.random.key(config.seed))
  task = pipeline.task_of(config)
  corpus = runtime.primary_first("corpus", lambda: pipeline.load_corpus(config))
  encoder, model_params, head_params = pipeline.init_model(config, encoder, rng_model, corpus)
  params, frozen = models.split_params(model_params, head_params,
                                   train_feature_encoder=not config.model.freeze_feature_encoder)
  data = runtime.primary_first(
      "features", lambda: pipeline.federated_data(config, encoder, frozen, corpus))
  num_clients = int(data.clients.labels.shape[0])
  if config.clients_per_round > num_clients:
    raise ValueError(f"clients_per_round={config.clients_per_round} but the partition has only "
                     f"{num_clients} clients")
  depths, tier_of = pipeline.client_depths(config, encoder, num_clients)
  exits = tuple(config.model.exits)
  spec = pipeline.round_spec(config, encoder, tuple(sorted(set(depths.tolist()))))
  trained_exits = trees.trained_exits(exits, depths, spec.client.deepest_only)
  if trained_exits != exits:
    log.warning("no client trains exit(s) %s (client depths %s, loss %r), so they are not "
                "evaluated", tuple(e for e in exits if e not in trained_exits),
                sorted(set(depths.tolist())), config.loss)
  state = fl.init_server_state(params, spec.server_optimizer, rng_server)
  costs = _step_costs(spec, state.params, data.clients, depths, config.weighting)
  flops = {d: c["flops"] for d, c in costs.items()}
  speeds = np.array([config.tiers[t]["speed"] if t >= 0 else 1.0 for t in tier_of])

  done = 0
  if start is not None:
    restored = checkpoint.restore_latest(workdir, state)
    if restored is not None:
      state, done = restored
      log.info("resumed %s at round %d", workdir, done)
  writer = (metrics.MetricsWriter(workdir, resume_round=done if start is not None else None)
            if primary else None)
  if primary:
    _write_run_info(workdir, data.summary, depths, corpus.root, encoder, cpu_devices,
                    skipped_files=corpus.train.num_skipped)

  resident = fl.place_dataset(data.clients, spec)  # on the devices once: rounds gather by id
  ev, row, all_excluded = None, {}, 0
  bar = tqdm.trange(done, config.rounds, initial=done, total=config.rounds, desc="rounds",
                    disable=not (config.progress_bar and primary), dynamic_ncols=True)
  for r in bar:
    ids = fl.sample_clients(config.seed, r, num_clients, clients_per_round=config.clients_per_round)
    cohort = fl.cohort_from_dataset(resident, ids, depths)
    state, m = _run_round(state, cohort, spec, r, workdir)
    steps = np.asarray(m["num_steps"])
    row = {"round": r + 1,
           # None (JSON null) when every client was excluded: nothing was measured
           "train_loss": (float(m["mean_loss"]) if int(m["num_nonfinite"]) < len(ids)
                          else None),
           "num_nonfinite": int(m["num_nonfinite"]),
           "examples": int(m["total_examples"]),
           "local_steps": int(steps.sum()),  # real local steps of the round's clients
           "update_norm": float(m["update_norm"]),
           "sim_seconds": accounting.round_time(cohort.depths.tolist(), steps.tolist(),
                                                speeds[ids].tolist(), flops,
                                                config.accounting.flops_per_second),
           "clients_per_depth": {str(d): int(np.sum(cohort.depths == d))
                                 for d in spec.depth_levels}}
    if row["num_nonfinite"]:
      bad = np.asarray(m["client_id"])[~np.asarray(m["finite"])]
      log.warning("round %d: %d client update(s) were not finite and were left out of the "
                  "aggregate (clients %s)", r + 1, row["num_nonfinite"], bad.tolist())
    all_excluded = all_excluded + 1 if row["train_loss"] is None else 0
    if all_excluded >= config.stop_after_excluded_rounds:
      if writer:
        writer.write(r + 1, row)
      raise DivergedError(_diverged(workdir, f"round {r + 1}: every client's update was "
                                    f"non-finite in the last {all_excluded} rounds"))
    last = r + 1 == config.rounds
    if (r + 1) % config.eval_every == 0 or last:
      ev, scores = evaluate_exits(config, task, encoder, runtime.local_copy(state.params),
                                  frozen, data, corpus, spec, trained_exits)
      if not np.all(np.isfinite(ev["loss"])):
        raise DivergedError(_diverged(workdir, f"round {r + 1}: the global model's test loss "
                                      f"is not finite ({ev['loss'].tolist()})"))
      for name, vals in scores.items():
        row[name] = {str(e): float(x) for e, x in zip(trained_exits, vals)}
      row["test_loss"] = {str(e): float(x) for e, x in zip(trained_exits, ev["loss"])}
      bar.set_postfix(loss=f"{np.nan if row['train_loss'] is None else row['train_loss']:.3f}",
                      **{task.primary[:3]: " ".join(f"{e}:{x:.3f}"
                                                   for e, x in row[task.primary].items())})
    if writer:
      writer.write(r + 1, row)
    if (r + 1) % config.checkpoint_every == 0 or last:
      checkpoint.save(workdir, r + 1, state, config=config, max_to_keep=config.max_checkpoints)
  bar.close()
  if ev is None:  # resumed a finished run: evaluate the restored model for the report
    ev, scores = evaluate_exits(config, task, encoder, runtime.local_copy(state.params), frozen,
                                data, corpus, spec, trained_exits)
  if not primary:
    return {name: {str(e): float(x) for e, x in zip(trained_exits, vals)}
            for name, vals in scores.items()}
  writer.close()
  return _report(config, task, corpus, workdir, ev, scores, trained_exits, costs,
                 time.time() - t0)


def evaluate_exits(config, task, encoder, params, frozen, data: pipeline.FederatedData, corpus,
                   spec: fl.RoundSpec, exits: tuple[int, ...]):
  """(the engine's evaluation on the central test set, the task's metrics {name: [n]}) at the
  trained exits."""
  # cached test features; with a trained CNN, waveforms that the model runs it on (as a client's)
  ev = fl.evaluate(spec.client.model, params, data.test_inputs, data.test_mask, data.test_labels,
                   batch_size=config.eval_batch_size, heads_at=exits,
                   objective=spec.client.objective)
  scores = dict(task.metrics(ev, corpus.test))
  scores.update(task.extra_metrics(config, encoder, params, frozen, exits, corpus))
  return ev, scores


def _run_round(state, cohort, spec, r: int, workdir: Path):
  """fl.run_round; in a multi-process run, a peer that died surfaces here as an XLA runtime error
  (a failed collective) and becomes a DistributedError that says how to go on."""
  if jax.process_count() == 1:
    return fl.run_round(state, cohort, spec)
  try:
    return jax.block_until_ready(fl.run_round(state, cohort, spec))
  except jax.errors.JaxRuntimeError as e:
    folder = checkpoint.checkpoint_dir(workdir)  # read directly: orbax would wait for the dead
    steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    newest = (f"the newest checkpoint is round {max(steps)}" if steps
              else "no checkpoint was saved yet")
    raise runtime.DistributedError(
        f"round {r + 1}: lost another process of the run ({' '.join(str(e).split())[:200]}); "
        f"{newest}: start every process again with --resume") from None


def _diverged(workdir: Path, what: str) -> str:
  """DivergedError's message: what happened and the newest checkpoint that is finite, if any."""
  step, _ = checkpoint.newest_intact(workdir)
  where = (f"round {step} in {checkpoint.checkpoint_dir(workdir)} is the newest finite checkpoint"
           if step is not None else "no finite checkpoint was saved")
  return (f"{what}: the run diverged; lower the learning rates and start a new --workdir "
          f"({where}).")


def _write_run_info(workdir: Path, summary: dict, depths: np.ndarray, root: Path, encoder,
                    cpu_devices: int, skipped_files: int = 0) -> None:
  info = {"data_root": str(root), "partition": summary,
          "skipped_files": int(skipped_files),  # unreadable audio left out (data.skip_bad_files)
          "devices": [str(d) for d in jax.devices()], "cpu_devices": cpu_devices,
          "clients_per_depth": {str(d): int(n) for d, n in zip(*np.unique(depths,
                                                                          return_counts=True))},
          "encoder": encoder.to_hf_dict()}
  (workdir / "run_info.json").write_text(json.dumps(metrics.to_json_value(info), indent=2))


def _report(config, task, corpus, workdir: Path, ev, scores, trained_exits, costs,
            seconds: float) -> dict[str, Any]:
  """summary.md, plots and the returned dict: final metrics, early-exit policies, tier costs."""
  policies = []
  if "correct" in ev:  # classification: the confidence-threshold early-exit policy
    fixed = {f"tier {i} (exit {t['max_depth']})": t["max_depth"]
             for i, t in enumerate(config.tiers) if t["max_depth"] in trained_exits}
    policies = metrics.policies_from_confidence(ev["correct"], ev["confidence"], trained_exits,
                                                config.exit_policy.thresholds, fixed)
  flops = {d: c["flops"] for d, c in costs.items()}
  memory = {d: c["memory"] for d, c in costs.items()}
  upload = {d: c["upload"] for d, c in costs.items()}
  tiers = accounting.tier_table(config.tiers, flops, memory, upload) if config.tiers else []
  rows = metrics.read_metrics(workdir)
  sim = sum(r.get("sim_seconds", 0.0) for r in rows)
  excluded = sum(r.get("num_nonfinite", 0) for r in rows)
  excluded_rounds = sum(1 for r in rows if r.get("num_nonfinite", 0))
  if task.head == "pooled":
    chance = float(np.log(task.num_outputs(config, corpus)))
    high = {e: float(x) for e, x in zip(trained_exits, ev["loss"]) if x > 10 * chance}
    if high:
      log.warning("the final test loss %s is over 10x that of a uniform guess (%.2f): training "
                  "probably diverged; lower the learning rates", high, chance)
  metrics.write_summary(workdir, rows=rows, policies=policies,
                        tier_table_md=accounting.markdown_tier_table(tiers) if tiers else None,
                        extra={"Test metrics per device tier": metrics.tier_metrics_table(
                                   config.tiers, trained_exits, scores),
                               "Run": f"- task: {config.task}\n"
                                      f"- rounds: {config.rounds}\n"
                                      f"- client updates excluded as non-finite: {excluded} "
                                      f"(in {excluded_rounds} rounds)\n"
                                      f"- simulated device time: {sim:.1f} s\n"
                                      f"- host wall-clock of this invocation: {seconds:.1f} s"},
                        keys=tuple(scores))
  plots.make_plots(workdir, tiers=tiers, policies=policies,
                   chance={task.primary: task.chance(config, corpus)}, keys=tuple(scores))
  out = {name: {str(e): float(x) for e, x in zip(trained_exits, vals)}
         for name, vals in scores.items()}
  return {**out, "policies": policies, "tiers": tiers, "seconds": seconds}
