"""Baseline (c): the round of torch_baseline.py as a Flower 1.42 simulation (`flwr[simulation]`).

What a Flower + transformers user runs: a ServerApp whose strategy sends the global model to
every client, a ClientApp that loads it into a HubertModel truncated to the client's depth and
trains it (torch_baseline's `truncate` and `local_train`: frozen CNN on raw audio, stats pooling,
a linear head at exit d, SGD), and an `aggregate_train` (1.42's name for `aggregate_fit`) taking
the paper's n_i * d_i depth-aware mean. Clients run in Ray actors, `actors` of them at once with
one CPU and one torch thread each. Flower's own FedAvg cannot do this round: it requires every
reply to hold the same arrays, and a depth-3 client returns layers 1..3 only.

The server's model is the encoder without its frozen CNN (every client loads that from the
checkpoint, here the same seeded HubertModel) plus one head per exit, named `head.<exit>.*`.
"""
from __future__ import annotations

import functools
import logging
import os
import statistics
import time
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

from benchmarks import common, torch_baseline
from benchmarks.common import Workload

FROZEN = "feature_extractor."


def server_arrays(hf_model, head_params: dict[str, Any]) -> dict[str, np.ndarray]:
  """The global model the server holds and sends: the encoder without its frozen CNN, and the
  exit heads (the same initial weights as torch_baseline's)."""
  out = {n: p.detach().numpy().copy() for n, p in hf_model.named_parameters()
         if not n.startswith(FROZEN)}
  for e, h in torch_baseline.exit_heads(head_params).items():
    out.update({f"head.{e}.{n}": p.detach().numpy().copy() for n, p in h.named_parameters()})
  return out


def depth_weighted_mean(current: dict[str, np.ndarray],
                        updates: Iterable[tuple[dict[str, np.ndarray], float]]
                        ) -> dict[str, np.ndarray]:
  """Per array, sum_i w_i x_i / sum_i w_i over the clients i whose update holds it (w_i = n_i * d_i;
  a depth-d client sends layers 1..d and head d), so a layer is averaged over the clients that
  trained it; an array no client sent keeps its current value."""
  num: dict[str, np.ndarray] = {}
  den: dict[str, float] = {}
  for arrays, w in updates:
    for k, x in arrays.items():
      num[k] = num.get(k, 0.0) + w * x.astype(np.float64)
      den[k] = den.get(k, 0.0) + w
  return {k: (num[k] / den[k]).astype(v.dtype) if den.get(k, 0.0) > 0 else v
          for k, v in current.items()}


class DepthAwareFedAvg(FedAvg):
  """FedAvg's sampling and messages; aggregation by depth_weighted_mean with w_i = n_i * d_i,
  from the `num-examples` and `depth` each client reports."""

  def __init__(self, num_clients: int):
    super().__init__(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=num_clients,
                     min_available_nodes=num_clients)
    self.current: dict[str, np.ndarray] = {}

  def configure_train(self, server_round, arrays, config, grid):
    self.current = {k: v.numpy() for k, v in arrays.items()}
    return super().configure_train(server_round, arrays, config, grid)

  def aggregate_train(self, server_round, replies):
    # validate=False: FedAvg's check wants the same arrays in every reply
    valid, errors = self._check_and_log_replies(replies, is_train=True, validate=False)
    if errors:  # a failed client must not pass for a round that trained fewer clients
      raise RuntimeError(f"round {server_round}: {len(errors)} client(s) failed: "
                         f"{errors[0].error.reason}")
    updates = []
    for msg in valid:
      m = msg.content["metrics"]
      updates.append(({k: v.numpy() for k, v in msg.content["arrays"].items()},
                      float(m["num-examples"]) * float(m["depth"])))
    mean = depth_weighted_mean(self.current, updates)
    metrics = self.train_metrics_aggr_fn([msg.content for msg in valid], self.weighted_by_key)
    return ArrayRecord({k: Array(v) for k, v in mean.items()}), metrics


# ----------------------------------------------------------------------------- client (Ray actor)


@functools.lru_cache(maxsize=None)
def _client_side(w: Workload):
  """Built once per actor process: the data of every client (the same noise as the other
  contenders, `common.waveforms`) and one truncated model + head per depth level."""
  waves, labels = common.waveforms(w)
  hf = common.torch_hubert(w.config, w.seed)
  models = {d: (torch_baseline.truncate(hf, d),
                torch.nn.Linear(2 * w.config.hidden_size, w.num_classes))
            for d in w.depth_levels}
  return torch.from_numpy(waves), torch.from_numpy(labels).long(), models


def _train(w: Workload, threads: int, msg: Message, context: Context) -> Message:
  torch.set_num_threads(threads)
  k = int(context.node_config["partition-id"])
  d = int(w.depths()[k])
  waves, labels, models = _client_side(w)
  model, head = models[d]
  local = torch_baseline.trainable(model)
  sent = msg.content["arrays"]
  with torch.no_grad():  # the server's weights into the client model
    for n, p in local.items():
      p.copy_(torch.from_numpy(sent[n].numpy()))
    for n, p in head.named_parameters():
      p.copy_(torch.from_numpy(sent[f"head.{d}.{n}"].numpy()))
  rnd = int(msg.content["config"]["server-round"])
  perm = np.random.default_rng((w.seed, rnd, k)).permutation(w.examples_per_client)
  losses = torch_baseline.local_train(w, model, head, waves[k], labels[k], perm)
  out = {n: p.detach().numpy().copy() for n, p in local.items()}
  out.update({f"head.{d}.{n}": p.detach().numpy().copy() for n, p in head.named_parameters()})
  metrics = MetricRecord({"num-examples": w.examples_per_client, "depth": d,
                          "train-loss": float(np.mean(losses))})
  return Message(RecordDict({"arrays": ArrayRecord({n: Array(x) for n, x in out.items()}),
                             "metrics": metrics}), reply_to=msg)


def client_app(w: Workload, threads: int = 1) -> ClientApp:
  app = ClientApp()

  @app.train()
  def train(msg: Message, context: Context) -> Message:  # pickled to the actors: keep it small
    return _train(w, threads, msg, context)

  del train
  return app


# ----------------------------------------------------------------------------- server + timing


def run(w: Workload, hf_model, head_params: dict[str, Any], rounds: int, actors: int = 2,
        threads: int = 1, quiet: bool = True) -> dict[str, Any]:
  """`rounds` rounds over all w.num_clients clients in one Flower simulation (Ray started and
  stopped inside). Round r's time runs from the end of round r-1 (the start of the strategy for
  round 1, so the first round includes starting the actors, their imports and model building);
  steady = median of rounds 2..rounds. Returns the times and the final global arrays."""
  marks: list[float] = []
  box: dict[str, Any] = {}
  server = ServerApp()

  @server.main()
  def main(grid: Grid, context: Context) -> None:
    del context
    strategy = DepthAwareFedAvg(w.num_clients)
    result = strategy.start(grid, ArrayRecord({k: Array(v) for k, v in
                                               server_arrays(hf_model, head_params).items()}),
                            num_rounds=rounds,
                            evaluate_fn=lambda r, a: marks.append(time.perf_counter()))
    box["arrays"] = {k: v.numpy() for k, v in result.arrays.items()}

  del main
  os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a FutureWarning
  level = logging.getLogger("flwr").level
  t0 = time.perf_counter()
  with warnings.catch_warnings():
    if quiet:  # flwr logs every round; ray's start-up forks+execs from this (JAX) process
      logging.getLogger("flwr").setLevel(logging.ERROR)
      warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
    try:
      run_simulation(server, client_app(w, threads), num_supernodes=w.num_clients,
                     backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                     "init_args": {"num_cpus": actors}})
    finally:
      logging.getLogger("flwr").setLevel(level)
  total = time.perf_counter() - t0
  if "arrays" not in box or len(marks) != rounds + 1:
    raise RuntimeError(f"the Flower simulation ended early ({len(marks) - 1} of {rounds} rounds)")
  times = [float(x) for x in np.diff(marks)]
  return {"first_round_seconds": times[0],
          "seconds": statistics.median(times[1:]) if rounds > 1 else None,
          "round_seconds": times, "simulation_seconds": total, "actors": actors,
          "threads_per_actor": threads, "arrays": box["arrays"]}
