"""Smoke test of benchmarks/throughput.py: the GPU mode's code path (bigger chunks, results file
with the device name) on a tiny model, one repetition, on CPU. No timing thresholds (STYLE
principle 10): it checks that every figure is there, finite and positive, and that the script's
last lines have the promised form."""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import jax
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed
from benchmarks import throughput  # pylint: disable=g-import-not-at-top


def _finite_positive(x):
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_gpu_mode_refuses_cpu_without_allow_cpu(tmp_path):
  if jax.default_backend() != "cpu":
    pytest.skip("only meaningful without an accelerator")
  with pytest.raises(SystemExit):
    throughput.main(["--gpu", "--tiny", "--out", str(tmp_path / "gpu.json")])
  assert not (tmp_path / "gpu.json").exists()


def test_tiny_gpu_mode_writes_results(tmp_path, capsys):
  out = tmp_path / "gpu.json"
  throughput.main(["--gpu", "--allow-cpu", "--tiny", "--sections", "round,limits",
                   "--out", str(out)])
  res = json.loads(out.read_text())
  assert res["machine"]["device_kind"] == jax.devices()[0].device_kind
  assert res["mode"] == "gpu-tiny"
  r = res["round"]
  assert r["chunk_default"] == 2  # the GPU plan's chunk > 1 path
  for name in ("engine", "loop"):
    assert _finite_positive(r[name]["seconds"])
    assert r[name]["examples_per_s"] == pytest.approx(
        r["clients"] * res["workload"]["local_steps"] * res["workload"]["batch_size"]
        / r[name]["seconds"])
  assert _finite_positive(r["speedup_vs_loop"])
  if "pytorch" in r:  # torch is a test extra, but may be absent
    assert _finite_positive(r["speedup_vs_pytorch"])
  lim = res["limits"]
  for x in (lim["round_flops"], lim["matmul"]["flops_per_s"], lim["round_vs_matmul"],
            lim["tree_mean"]["ratio"], lim["tree_mean"]["copy_bytes_per_s"]):
    assert _finite_positive(x)
  md = out.with_suffix(".md").read_text()
  assert res["machine"]["device_kind"] in md and "Distance to the limit" in md
  if "drjax" in r:  # drjax is a test extra: the same round written with DrJAX
    assert _finite_positive(r["speedup_vs_drjax"]) and "DrJAX" in md
  if "flower" in r:  # flwr is in the peers extra: the PyTorch round as a Flower simulation
    assert _finite_positive(r["speedup_vs_flower"]) and "Flower simulation" in md
    assert _finite_positive(r["flower"]["first_round_seconds"])
  expect = (["per-client loop"] + ["PyTorch loop"] * ("pytorch" in r) + ["DrJAX"] * ("drjax" in r)
            + ["Flower"] * ("flower" in r))
  last = capsys.readouterr().out.strip().splitlines()[-len(expect):]
  for line, name in zip(last, expect):
    assert re.fullmatch(rf"speedup vs {name}: [0-9.]+x at 4 clients", line), line


def test_markdown_renders_every_section():
  w = throughput.plan("quick", tiny=True).headline
  rate = {"seconds": 2.0, "client_updates_per_s": 2.0, "examples_per_s": 4.0}
  mem = {"argument_bytes": 2**20, "temp_bytes": 2**21, "output_bytes": 0}
  res = {"mode": "x", "date": "d", "reps": 1, "workload": {**w.__dict__},
         "machine": {"device_kind": "cpu", "backend": "cpu", "num_devices": 1, "cpu_model": "m",
                     "cpu_cores": 2, "jax_version": "0", "load_average_1m": 0.0},
         "round": {"clients": 4, "chunk_default": 1, "cache_features_seconds": 1.0,
                   "engine": rate, "engine_chunks": {"4": {**rate, "seconds": 4.0}},
                   "loop": {**rate, "seconds": 6.0}, "speedup_vs_loop": 3.0,
                   "flower": {**rate, "seconds": 8.0, "first_round_seconds": 20.0, "actors": 2,
                              "threads_per_actor": 1}, "speedup_vs_flower": 4.0},
         "cohorts": [{"clients": 4, "chunk": 1, **rate, "memory_default_chunk": mem,
                      "memory_chunk_all": mem}],
         "backbones": [{"preset": "small", "hidden_size": 32, "params": 10**6, "clients": 4,
                        **rate, "memory": mem}],
         "depths": [{"depth": 3, "seconds": 1.0, "flops": 1e9, "time_ratio": 0.25,
                     "flop_ratio": 0.25}],
         "limits": {"round_flops_per_s": 1e9, "round_vs_matmul": 0.5,
                    "matmul": {"n": 8, "flops_per_s": 2e9},
                    "tree_mean": {"clients": 4, "stacked_bytes": 2**20, "ratio": 0.5,
                                  "tree_mean_bytes_per_s": 1e9, "copy_bytes_per_s": 2e9}}}
  md = throughput.markdown(res)
  assert "| engine (chunk 4) | 4 | 2 | 4 | 2.00x |" in md  # 4 s vs the default's 2 s
  assert "3.00x" in md and "**50%**" in md and "| 3 | 1 | 1 | 0.25 | 0.25 |" in md
  assert "first round 20 s incl. start-up) | 8 | 2 | 4 | 4.00x |" in md
  assert throughput.summary_lines(res) == ["speedup vs per-client loop: 3.00x at 4 clients",
                                           "speedup vs Flower: 4.00x at 4 clients"]


def test_widen_keeps_the_small_presets_shape():
  w = throughput.widen(throughput.plan("quick").headline, 256)
  assert (w.config.hidden_size, w.config.intermediate_size, w.config.num_attention_heads) == (
      256, 512, 8)
  assert w.config.conv_dim == throughput.plan("quick").headline.config.conv_dim


def test_padding_fills_by_hand():
  """Two clients: lengths [4, 2] and [1] (one padding row), the longest 4 samples."""
  import types  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from benchmarks import padding  # pylint: disable=import-outside-toplevel
  cd = types.SimpleNamespace(lengths=np.array([[4, 2], [1, 0]]),
                             example_mask=np.array([[True, True], [True, False]]),
                             waveforms=np.zeros((2, 2, 4)))
  config = types.SimpleNamespace(rounds=1, seed=0, clients_per_round=2, batch_size=2)
  f = padding.fills(config, cd)
  assert f["global"] == pytest.approx(7 / 12)  # 7 real samples in 3 rows of 4
  assert f["per cohort"] == pytest.approx(7 / 12)  # the one cohort holds the longest
  assert f["sorted batches"] == pytest.approx(7 / 9)  # batches [2, 4] -> 2 x 4, [1] -> 1
  assert f["_sorted_mean_len"] == pytest.approx((4 + 1) / 2 / 4)
  config.batch_size = 1
  assert padding.fills(config, cd)["sorted batches"] == pytest.approx(1.0)


def test_profile_round_self_times_and_classes():
  """benchmarks/profile_round.py: an op's self time is its duration less its direct children's
  on the same thread (hand-made trace); the op classes follow XLA:CPU's and aten's names."""
  from benchmarks import profile_round as pr  # pylint: disable=import-outside-toplevel
  ev = [
      {"ph": "X", "name": "while", "ts": 0.0, "dur": 100.0, "pid": 1, "tid": 1},
      {"ph": "X", "name": "ynn_fusion.3", "ts": 10.0, "dur": 30.0, "pid": 1, "tid": 1},
      {"ph": "X", "name": "copy.1", "ts": 50.0, "dur": 10.0, "pid": 1, "tid": 1},
      {"ph": "X", "name": "add_fusion", "ts": 52.0, "dur": 5.0, "pid": 1, "tid": 1},  # in copy.1
      {"ph": "X", "name": "ynn_fusion.3", "ts": 20.0, "dur": 7.0, "pid": 1, "tid": 2},
      {"ph": "i", "name": "marker", "ts": 5.0, "pid": 1, "tid": 1},  # not a complete event
  ]
  got = pr.self_times(ev)
  assert got == {"while": 60.0, "ynn_fusion.3": 37.0, "copy.1": 5.0, "add_fusion": 5.0}
  assert [pr.engine_class(n) for n in ("ynn_fusion.76", "dot.267", "all-reduce.2604",
                                       "copy_bitcast_fusion.31", "dynamic-slice_bitcast_fusion.7",
                                       "add_select_fusion.39", "reduce.4", "Rendezvous")] == [
      "matmul", "matmul", "collective", "copy/layout", "slicing", "elementwise", "reduction",
      "other"]
  assert [pr.torch_class(n) for n in ("aten::mm", "aten::addmm", "aten::mkldnn_convolution",
                                      "aten::gelu", "aten::copy_", "aten::sum", "aten::t",
                                      "aten::tanh")] == [
      "matmul", "matmul", "convolution", "elementwise", "copy/layout", "reduction", "copy/layout",
      "elementwise"]
