"""accounting.py: FLOPs (scans unrolled) and memory from XLA, upload bytes, simulated clock."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedexit_jax import accounting

B, D = 4, 16


def _chain(x, ws):
  """x @ w_1 @ ... @ w_L through a scan: 2*B*D*D FLOPs per layer, nothing else."""
  return jax.lax.scan(lambda h, w: (h @ w, None), x, ws)[0]


def _args(layers):
  return jnp.ones((B, D)), jnp.ones((layers, D, D)) / D


def test_matmul_chain_flops_are_exact_and_count_every_scan_iteration():
  for layers in (1, 3, 6):
    assert accounting.step_flops(_chain, *_args(layers)) == layers * 2 * B * D * D
  # What XLA reports without unrolling: the loop body once, whatever the trip count.
  plain = accounting.cost_analysis(_chain, *_args(6), unroll_scans=False)["flops"]
  assert plain < 2 * (2 * B * D * D)


def test_training_step_flops_hand_derived():
  def loss(ws, x):
    return jnp.sum(_chain(x, ws) ** 2)

  step = jax.grad(loss)
  mm = 2 * B * D * D
  f = {d: accounting.step_flops(step, *reversed(_args(d))) for d in (3, 6)}
  # Per layer: forward h @ w, dL/dw = h^T g and dL/dh = g w^T (the scan's transpose computes the
  # carry's cotangent in every iteration, the first too): 3d matmuls, plus the loss's
  # elementwise work (square, sum, and their derivative), which does not depend on d.
  assert f[6] - f[3] == 3 * 3 * mm
  assert 0 <= f[3] - 3 * 3 * mm < 5 * B * D


def test_elementwise_flops_are_linear_in_depth():
  # After XLA's optimisation an unrolled elementwise chain gets fused with recomputation; the
  # count of the program as written stays exactly linear.
  def k(x, ws):
    return jax.lax.scan(lambda h, w: (h + jnp.sum(h * h, -1, keepdims=True), None), x, ws)[0]
  f = [accounting.step_flops(k, *_args(d)) for d in (2, 4, 8)]
  assert f[2] - f[1] == 2 * (f[1] - f[0])


def test_step_memory_counts_arguments_and_outputs():
  x, ws = _args(6)
  mem = accounting.step_memory(_chain, x, ws)
  assert mem["argument_bytes"] == x.nbytes + ws.nbytes
  assert mem["output_bytes"] == B * D * 4
  assert mem["peak_bytes"] >= mem["argument_bytes"] + mem["output_bytes"] - mem["alias_bytes"]
  small = accounting.step_memory(_chain, *_args(3))
  assert small["argument_bytes"] == mem["argument_bytes"] - 3 * D * D * 4


def test_training_memory_grows_with_depth():
  # Backward needs every layer's input: the temporaries grow with the depth trained.
  def loss(ws, x):
    return jnp.sum(_chain(x, ws) ** 2)
  temp = {d: accounting.step_memory(jax.grad(loss), *reversed(_args(d)))["temp_bytes"]
          for d in (2, 8)}
  assert temp[8] > temp[2]


def test_donated_step_aliases_outputs_to_inputs():
  def sgd(ws, x):
    return ws - 0.1 * jax.grad(lambda w: jnp.sum(_chain(x, w) ** 2))(ws)
  ws, x = _args(4)[1], _args(4)[0]
  plain = accounting.step_memory(sgd, ws, x)
  donated = accounting.step_memory(sgd, ws, x, donate_argnums=0)
  assert plain["alias_bytes"] == 0 and plain["output_bytes"] == ws.nbytes
  assert donated["alias_bytes"] == ws.nbytes
  # Here the old weights are read until the update is done, so XLA keeps the new ones in a temp
  # buffer: donating saves nothing but never costs more.
  assert donated["peak_bytes"] <= plain["peak_bytes"]


def test_cost_analysis_accepts_shape_dtype_structs():
  x = jax.ShapeDtypeStruct((B, D), jnp.float32)
  ws = jax.ShapeDtypeStruct((2, D, D), jnp.float32)
  assert accounting.step_flops(_chain, x, ws) == 2 * 2 * B * D * D


def _tree():
  f = np.float32
  return {"feature_extractor": {"conv": np.zeros((100,), f)},  # frozen: never uploaded
          "feature_projection": {"kernel": np.zeros((10,), f)},
          "encoder": {"pos_conv": {"w": np.zeros((4,), f)},
                      "layer_norm": {"scale": np.zeros((2,), f)},
                      "layers": {"w": np.zeros((4, 3, 3), f)}},  # 4 layers x 9
          "heads": {"kernel": np.zeros((2, 5, 3), f), "bias": np.zeros((2, 3), f)}}  # 2 x 18


def test_upload_bytes_hand_counted():
  exits = (2, 4)
  shared = 10 + 4 + 2
  # depth 2: shared + 2 layers + the head of exit 2.
  assert accounting.upload_bytes(_tree(), 2, exits) == 4 * (shared + 2 * 9 + 18)
  assert accounting.upload_bytes(_tree(), 4, exits) == 4 * (shared + 4 * 9 + 2 * 18)
  assert accounting.upload_bytes(_tree(), 1, exits) == 4 * (shared + 9)
  assert (accounting.upload_bytes(_tree(), 2, exits, train_feature_encoder=True)
          == 4 * (100 + shared + 2 * 9 + 18))
  # fedavg_naive: every client sends back the whole (trainable) model.
  assert accounting.upload_bytes(_tree(), 2, exits, whole_model=True) == 4 * (shared + 36 + 36)
  with pytest.raises(ValueError, match="depth 5 exceeds the 4 stacked layers"):
    accounting.upload_bytes(_tree(), 5, exits)
  with pytest.raises(ValueError, match="one row per exit"):
    accounting.upload_bytes(_tree(), 2, (2, 3, 4))


def test_upload_bytes_of_nested_abstract_tree():
  tree = {"backbone": jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.bfloat16),
                                   {k: v for k, v in _tree().items() if k != "heads"}),
          "heads": _tree()["heads"]}
  assert accounting.upload_bytes(tree, 4, (2, 4)) == 2 * (16 + 36) + 4 * 36


def test_round_time_waits_for_the_slowest_client():
  flops = {3: 100.0, 6: 200.0}
  # times: 100*2/(1*10)=20, 200*1/(2*10)=10, 100*4/(1*10)=40
  assert accounting.round_time([3, 6, 3], [2, 1, 4], [1.0, 2.0, 1.0], flops,
                              10.0) == pytest.approx(40.0)
  assert accounting.round_time([6, 6], 3, [1.0, 4.0], flops) == pytest.approx(600.0)
  with pytest.raises(ValueError, match=r"no FLOPs measured for depth\(s\) \[9\]"):
    accounting.round_time([9], 1, [1.0], flops)
  with pytest.raises(ValueError, match="differ in length"):
    accounting.round_time([3, 6], [1], [1.0, 1.0], flops)


def test_time_to_error():
  rows = [{"round": 1, "error": {"3": 0.8}}, {"round": 2, "error": {"3": 0.5}},
          {"round": 3, "error": {"3": 0.3}}]
  assert accounting.time_to_error(rows, [10.0, 20.0, 5.0], 0.5, 3) == pytest.approx(30.0)
  assert accounting.time_to_error(rows, [10.0, 20.0, 5.0], 0.3, "3") == pytest.approx(35.0)
  assert accounting.time_to_error(rows, [10.0, 20.0, 5.0], 0.1, 3) is None


def test_tier_table_and_markdown():
  tiers = [{"fraction": 0.5, "max_depth": 3, "speed": 1.0},
           {"fraction": 0.5, "max_depth": 6, "speed": 2.0}]
  rows = accounting.tier_table(tiers, {3: 1e9, 6: 2e9}, {3: {"peak_bytes": 2**20},
                                                        6: {"peak_bytes": 2 * 2**20}},
                               {3: 2**20, 6: 3 * 2**20})
  assert [r["depth"] for r in rows] == [3, 6]
  assert [r["relative_step_time"] for r in rows] == [1.0, 1.0]  # twice the work, twice as fast
  md = accounting.markdown_tier_table(rows)
  assert "| tier 1 (depth 6) | 6 | 50% | 2 | 2 | 2 | 3 |" in md.splitlines()


def test_real_encoder_step_flops_grow_linearly_with_depth():
  from fedexit_jax.models import config as mconfig
  from fedexit_jax.models import wav2vec2
  cfg = mconfig.small(hidden_size=32, num_attention_heads=2, intermediate_size=64,
                      num_hidden_layers=6, conv_dim=(8,) * 7, num_conv_pos_embeddings=4,
                      num_conv_pos_embedding_groups=2)
  # Shapes are all the analysis needs: no init, no data.
  params = jax.eval_shape(lambda: wav2vec2.init_params(cfg, jax.random.key(0)))
  params = {k: v for k, v in params.items() if k != "feature_extractor"}
  feats = jax.ShapeDtypeStruct((2, 10, 8), jnp.float32)

  def step(params, feats, depth):
    return jax.grad(lambda p: jnp.mean(wav2vec2.encode_features(cfg, p, feats, depth=depth)[-1]
                                       ** 2))(params)

  f = {d: accounting.step_flops(functools.partial(step, depth=d), params, feats)
       for d in (2, 4, 6)}
  assert f[2] < f[4] < f[6]
  # A fixed cost (projection, positional conv) plus the same cost for every layer.
  assert f[6] - f[4] == pytest.approx(f[4] - f[2], rel=1e-3)
  # One layer's forward matmuls alone (q, k, v, out: 4 x 2*N*H*H; FFN 2 x 2*N*H*I, N = B*T
  # frames) are a lower bound on its training FLOPs; forward + backward is about 3x that.
  n, h, i = 2 * 10, 32, 64
  layer_fwd_matmuls = 4 * 2 * n * h * h + 2 * 2 * n * h * i
  per_layer = (f[6] - f[4]) / 2
  assert 2.5 * layer_fwd_matmuls < per_layer < 4.5 * layer_fwd_matmuls
