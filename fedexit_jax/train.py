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
  run = Simulation(config, workdir, resume)
  resident = fl.place_dataset(run.data.clients, run.spec)  # on the devices once: rounds gather by id
  for r in run.rounds_bar():
    cohort = run.cohort(resident, r)
    run.state, m = _run_round(run.state, cohort, run.spec, r, run.workdir)
    run.after_round(r, m, cohort)
  return run.finish()


class Simulation:
  """One simulation's everything but the round itself: set-up (config and workdir checks,
  corpus, clients and depths, model, server state restored from the newest checkpoint) and,
  after each round, its metrics row, evaluation, checkpoint and finally the report. A round is
  run by train_and_evaluate (one simulation) or replica_train (several in one program)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path, resume: bool):
    encoder = config_utils.validate_config(config)
    pipeline.preflight(config)
    runtime.use_distributed(config.distributed)  # multi-process: join the others, first thing
    cpu_devices = runtime.use_cpu_devices(config.cpu_devices)  # before JAX runs anything
    runtime.use_compilation_cache(config.compilation_cache)  # and before it compiles
    runtime.release_programs_if_crowded()  # a long session's old programs: see runtime
    self.primary = runtime.is_primary()  # writes the files; every process trains, checkpoints
    self.config, self.workdir = config, Path(workdir)
    start = checkpoint.check_workdir(self.workdir, config, resume, write_config=self.primary)
    runtime.barrier("workdir checked")  # damaged rounds set aside before anyone restores
    self.t0 = time.time()
    rng_model, rng_server = jax.random.split(jax.random.key(config.seed))
    self.task = pipeline.task_of(config)
    corpus = runtime.primary_first("corpus", lambda: pipeline.load_corpus(config))
    encoder, model_params, head_params = pipeline.init_model(config, encoder, rng_model, corpus)
    params, frozen = models.split_params(
        model_params, head_params, train_feature_encoder=not config.model.freeze_feature_encoder)
    data = runtime.primary_first(
        "features", lambda: pipeline.federated_data(config, encoder, frozen, corpus))
    self.num_clients = int(data.clients.labels.shape[0])
    if config.clients_per_round > self.num_clients:
      raise ValueError(f"clients_per_round={config.clients_per_round} but the partition has "
                       f"only {self.num_clients} clients")
    depths, tier_of = pipeline.client_depths(config, encoder, self.num_clients)
    exits = tuple(config.model.exits)
    self.spec = pipeline.round_spec(config, encoder, tuple(sorted(set(depths.tolist()))))
    self.trained_exits = trees.trained_exits(exits, depths, self.spec.client.deepest_only)
    if self.trained_exits != exits:
      log.warning("no client trains exit(s) %s (client depths %s, loss %r), so they are not "
                  "evaluated", tuple(e for e in exits if e not in self.trained_exits),
                  sorted(set(depths.tolist())), config.loss)
    state = fl.init_server_state(params, self.spec.server_optimizer, rng_server)
    self.costs = _step_costs(self.spec, state.params, data.clients, depths, config.weighting)
    self.flops = {d: c["flops"] for d, c in self.costs.items()}
    self.speeds = np.array([config.tiers[t]["speed"] if t >= 0 else 1.0 for t in tier_of])
    self.encoder, self.frozen, self.corpus, self.data, self.depths = (encoder, frozen, corpus,
                                                                      data, depths)
    self.done = 0
    if start is not None:
      restored = checkpoint.restore_latest(self.workdir, state)
      if restored is not None:
        state, self.done = restored
        log.info("resumed %s at round %d", self.workdir, self.done)
    self.state = state
    self.writer = (metrics.MetricsWriter(self.workdir,
                                         resume_round=self.done if start is not None else None)
                   if self.primary else None)
    if self.primary:
      _write_run_info(self.workdir, data.summary, depths, corpus.root, encoder, cpu_devices,
                      skipped_files=corpus.train.num_skipped)
    self.ev, self.scores, self.all_excluded, self.bar = None, {}, 0, None

  def rounds_bar(self):
    """The rounds still to run, with a progress bar (process 0, config.progress_bar)."""
    c = self.config
    self.bar = tqdm.trange(self.done, c.rounds, initial=self.done, total=c.rounds, desc="rounds",
                           disable=not (c.progress_bar and self.primary), dynamic_ncols=True)
    return self.bar

  def cohort(self, resident: fl.ResidentDataset, r: int) -> fl.Cohort:
    """Round r's sampled clients (deterministic in the seed and the round)."""
    ids = fl.sample_clients(self.config.seed, r, self.num_clients,
                            clients_per_round=self.config.clients_per_round)
    return fl.cohort_from_dataset(resident, ids, self.depths)

  def after_round(self, r: int, m: dict, cohort: fl.Cohort) -> None:
    """Round r's row (metrics.jsonl), the divergence checks, evaluation and checkpoint."""
    config, workdir, k = self.config, self.workdir, len(cohort.depths)
    steps = np.asarray(m["num_steps"])
    row = {"round": r + 1,
           # None (JSON null) when every client was excluded: nothing was measured
           "train_loss": float(m["mean_loss"]) if int(m["num_nonfinite"]) < k else None,
           "num_nonfinite": int(m["num_nonfinite"]),
           "examples": int(m["total_examples"]),
           "local_steps": int(steps.sum()),  # real local steps of the round's clients
           "update_norm": float(m["update_norm"]),
           "sim_seconds": accounting.round_time(cohort.depths.tolist(), steps.tolist(),
                                                self.speeds[cohort.client_ids].tolist(),
                                                self.flops, config.accounting.flops_per_second),
           "clients_per_depth": {str(d): int(np.sum(cohort.depths == d))
                                 for d in self.spec.depth_levels}}
    if row["num_nonfinite"]:
      bad = np.asarray(m["client_id"])[~np.asarray(m["finite"])]
      log.warning("round %d: %d client update(s) were not finite and were left out of the "
                  "aggregate (clients %s)", r + 1, row["num_nonfinite"], bad.tolist())
    self.all_excluded = self.all_excluded + 1 if row["train_loss"] is None else 0
    if self.all_excluded >= config.stop_after_excluded_rounds:
      if self.writer:
        self.writer.write(r + 1, row)
      raise DivergedError(_diverged(workdir, f"round {r + 1}: every client's update was "
                                    f"non-finite in the last {self.all_excluded} rounds"))
    last = r + 1 == config.rounds
    if (r + 1) % config.eval_every == 0 or last:
      self.evaluate()
      if not np.all(np.isfinite(self.ev["loss"])):
        raise DivergedError(_diverged(workdir, f"round {r + 1}: the global model's test loss "
                                      f"is not finite ({self.ev['loss'].tolist()})"))
      for name, vals in self.scores.items():
        row[name] = {str(e): float(x) for e, x in zip(self.trained_exits, vals)}
      row["test_loss"] = {str(e): float(x) for e, x in zip(self.trained_exits, self.ev["loss"])}
      if self.bar is not None:
        primary = self.task.primary
        self.bar.set_postfix(
            loss=f"{np.nan if row['train_loss'] is None else row['train_loss']:.3f}",
            **{primary[:3]: " ".join(f"{e}:{x:.3f}" for e, x in row[primary].items())})
    if self.writer:
      self.writer.write(r + 1, row)
    if (r + 1) % config.checkpoint_every == 0 or last:
      checkpoint.save(workdir, r + 1, self.state, config=config,
                      max_to_keep=config.max_checkpoints)

  def evaluate(self) -> None:
    self.ev, self.scores = evaluate_exits(
        self.config, self.task, self.encoder, runtime.local_copy(self.state.params), self.frozen,
        self.data, self.corpus, self.spec, self.trained_exits)

  def finish(self) -> dict[str, Any]:
    """The last evaluation's metrics; process 0 also writes summary.md and the plots."""
    if self.bar is not None:
      self.bar.close()
    if self.ev is None:  # resumed a finished run: evaluate the restored model for the report
      self.evaluate()
    if not self.primary:
      return {name: {str(e): float(x) for e, x in zip(self.trained_exits, vals)}
              for name, vals in self.scores.items()}
    self.writer.close()
    return _report(self.config, self.task, self.corpus, self.workdir, self.ev, self.scores,
                   self.trained_exits, self.costs, time.time() - self.t0)


def evaluate_exits(config, task, encoder, params, frozen, data: pipeline.FederatedData, corpus,
                   spec: fl.RoundSpec, exits: tuple[int, ...]):
  """(the engine's evaluation on the central test set, the task's metrics {name: [n]}) at the
  trained exits."""
  # cached test features; with a trained CNN, waveforms that the model runs it on (as a client's)
  ev = fl.evaluate(spec.client.model, params, data.test_inputs, data.test_mask, data.test_labels,
                   batch_size=config.eval_batch_size, heads_at=exits,
                   objective=spec.client.objective)
  scores = dict(task.metrics(ev, corpus.test))
  scores.update(task.extra_metrics(config, encoder, params, frozen, exits, corpus, ev))
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
