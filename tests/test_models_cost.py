"""The forward pass to depth d costs d layers: XLA's own cost analysis of the compiled encoder.

What is compared: encode_features (feature projection + positional conv + d transformer layers)
on conv features of a 1 s clip, `small` preset (12 layers). The projection and positional conv
are a fixed cost (about half a layer here), so depth 3 / depth 12 is a little above 3/12: expected
(0.5 + 3) / (0.5 + 12) = 0.28, asserted in [0.2, 0.35]. The conv feature encoder is left out on
purpose: it is frozen and its cost does not depend on depth.

XLA's cost analysis counts a while-loop body once, whatever its trip count, so the flops are read
from the same function with the layer scan unrolled; for the real (scanned) program the test
checks that XLA knows the loop runs exactly `depth` times.
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest

from fedexit_jax.models import config as mconfig
from fedexit_jax.models import wav2vec2

CFG = mconfig.small()
FRAMES = CFG.num_frames(16000)  # 49


def _compiled(depth: int, unroll):
  params = jax.eval_shape(lambda: wav2vec2.init_params(CFG, jax.random.PRNGKey(0)))
  feats = jax.ShapeDtypeStruct((1, FRAMES, CFG.conv_dim[-1]), jnp.float32)
  fn = lambda p, f: wav2vec2.encode_features(CFG, p, f, None, depth, unroll=unroll)
  return jax.jit(fn).lower(params, feats).compile()


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


@pytest.mark.slow
def test_depth3_costs_about_a_quarter_of_depth12():
  flops = {d: _flops(_compiled(d, unroll=True)) for d in (3, 6, 12)}
  ratio = flops[3] / flops[12]
  assert 0.2 < ratio < 0.35, (ratio, flops)
  # cost is linear in depth: 6 extra layers add twice what 3 extra layers add
  step = flops[6] - flops[3]
  assert step > 0
  assert abs((flops[12] - flops[6]) - 2 * step) / step < 0.01, flops


@pytest.mark.parametrize("depth", [3, 12])
def test_scanned_program_runs_the_layer_body_depth_times(depth):
  text = _compiled(depth, unroll=1).as_text()
  trips = re.findall(r'known_trip_count":\{"n":"(\d+)"', text)
  assert trips == [str(depth)], trips
