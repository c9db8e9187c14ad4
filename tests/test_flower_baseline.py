"""The Flower baseline of benchmarks/ (flwr is in the `peers` extra, not `test`: skipped without
it) aggregates by the per-layer n_i * d_i mean, and its simulated round gives the PyTorch loop's
round: same weights in, same data, same local training."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed
from benchmarks import flower_baseline as fb  # pylint: disable=g-import-not-at-top
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict


def test_depth_weighted_mean_by_hand():
  """Client a: 2 examples, depth 1 (w = 2); client b: 3 examples, depth 2 (w = 6)."""
  current = {"l0": np.array([0.0, 0.0], np.float32), "l1": np.array([5.0], np.float32),
             "l2": np.array([7.0], np.float32)}
  a = {"l0": np.array([1.0, 2.0], np.float32)}
  b = {"l0": np.array([3.0, 4.0], np.float32), "l1": np.array([9.0], np.float32)}
  out = fb.depth_weighted_mean(current, [(a, 2.0), (b, 6.0)])
  np.testing.assert_allclose(out["l0"], [(2 * 1 + 6 * 3) / 8, (2 * 2 + 6 * 4) / 8], rtol=1e-6)
  np.testing.assert_allclose(out["l1"], [9.0], rtol=1e-6)  # only b trained it
  np.testing.assert_allclose(out["l2"], [7.0], rtol=1e-6)  # nobody trained it: unchanged
  assert out["l0"].dtype == np.float32


def test_strategy_aggregate_train_weights_by_examples_times_depth(monkeypatch):
  from flwr.supercore.task_identity import TaskIdentity  # pylint: disable=import-outside-toplevel
  for attr in ("_task_id", "_run_id", "_node_id"):  # what a run sets before messages are made
    monkeypatch.setattr(TaskIdentity, attr, 1)
  s = fb.DepthAwareFedAvg(num_clients=2)
  s.current = {"x": np.zeros(1, np.float32), "y": np.full(1, 4.0, np.float32)}

  def reply(x, n, d):
    arrays = ArrayRecord({k: Array(np.asarray(v, np.float32)) for k, v in x.items()})
    metrics = MetricRecord({"num-examples": n, "depth": d, "train-loss": 1.0})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), dst_node_id=1,
                   message_type=MessageType.TRAIN)

  arrays, metrics = s.aggregate_train(1, [reply({"x": [1.0]}, 4, 1),
                                          reply({"x": [2.0], "y": [6.0]}, 2, 3)])
  np.testing.assert_allclose(arrays["x"].numpy(), [(4 * 1 + 6 * 2) / 10], rtol=1e-6)
  np.testing.assert_allclose(arrays["y"].numpy(), [6.0], rtol=1e-6)
  assert metrics["train-loss"] == pytest.approx(1.0)


@pytest.mark.slow
def test_flower_round_equals_the_pytorch_round():
  """Hidden 32, 2 clients at depths 3 and 6 (exits of the benchmark's heads), one local step
  over all of a client's examples (so the example order cannot differ)."""
  import torch  # pylint: disable=import-outside-toplevel
  from benchmarks import common, throughput  # pylint: disable=import-outside-toplevel
  from benchmarks.torch_baseline import TorchFederation  # pylint: disable=import-outside-toplevel
  w = common.Workload(overrides=throughput.TINY, num_clients=2, batch_size=2, local_steps=1,
                      clip_samples=3200)
  hf = common.torch_hubert(w.config, w.seed)
  _, _, head_params = common.jax_params(w, hf)
  before = fb.server_arrays(hf, head_params)
  flower = fb.run(w, hf, head_params, rounds=1)["arrays"]

  fed = TorchFederation(w, copy.deepcopy(hf), head_params)
  waves, labels = common.waveforms(w)
  fed.run_round(torch.from_numpy(waves), torch.from_numpy(labels).long(), w.depths(),
                np.random.default_rng(0))
  expect = {n: p.detach().numpy() for n, p in fed.global_model.named_parameters()}
  expect.update({f"head.{e}.{n}": p.detach().numpy() for e, h in fed.heads.items()
                 for n, p in h.named_parameters()})
  assert set(flower) == set(before)
  for k, v in flower.items():
    np.testing.assert_allclose(v, expect[k], rtol=1e-5, atol=1e-6, err_msg=k)
  moved = {k: float(np.max(np.abs(flower[k] - before[k]))) for k in flower}
  assert moved["encoder.layers.5.attention.q_proj.weight"] > 0  # trained by the depth-6 client
  assert moved["encoder.layers.6.attention.q_proj.weight"] == 0  # trained by nobody
  assert moved["head.3.weight"] > 0 and moved["head.9.weight"] == 0
