"""The engine federates any early-exit model: a tiny Flax NNX residual MLP with three exits runs
through the same compiled round as the speech model, checked against the per-client reference
loop, and learns on toy data."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from fedexit_jax import federated as fl

D_IN, WIDTH, LAYERS, CLASSES = 4, 8, 3, 3
EXITS = (1, 2, 3)


class ResidualMLP(nnx.Module):
  """x -> tanh embedding -> LAYERS residual tanh layers (stacked: one Linear with a leading layer
  axis) -> a linear head after every layer (stacked over exits)."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.embed = nnx.Linear(D_IN, WIDTH, rngs=rngs)

    @nnx.split_rngs(splits=LAYERS)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def layer(rngs):
      return nnx.Linear(WIDTH, WIDTH, rngs=rngs)

    @nnx.split_rngs(splits=len(EXITS))
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def head(rngs):
      return nnx.Linear(WIDTH, CLASSES, rngs=rngs)

    self.layers = layer(rngs)
    self.heads = head(rngs)

  def __call__(self, x, depth: int, heads_at: tuple[int, ...]):
    """Logits [len(heads_at), B, C]. Runs the layer rows it holds up to `depth`; its heads hold
    one row per exit of `heads_at`."""
    h = jnp.tanh(self.embed(x))
    graphdef, rows = nnx.split(self.layers)
    rows = jax.tree.map(lambda w: w[:depth], rows)

    def step(h, row):
      h = h + jnp.tanh(nnx.merge(graphdef, row)(h))
      return h, h

    _, hidden = jax.lax.scan(step, h, rows)  # [depth, B, W]
    picked = hidden[np.asarray(heads_at) - 1]
    return (jnp.einsum("nbw,nwc->nbc", picked, self.heads.kernel[...])
            + self.heads.bias[...][:, None, :])


@dataclasses.dataclass(frozen=True)
class MLPExitModel(fl.EarlyExitModel):
  """ResidualMLP as the engine sees it: stacked leaves under "layers" and "heads" (the
  EarlyExitModel defaults), so only the forward pass is written here."""
  exits: tuple = EXITS
  num_layers: int = LAYERS

  def logits(self, params, inputs, input_mask, depth, heads_at):
    return nnx.merge(_graphdef(), params)(inputs, depth, heads_at)


def _graphdef():
  return nnx.graphdef(nnx.eval_shape(lambda: ResidualMLP(rngs=nnx.Rngs(0))))


def _toy_data(num_clients=6, n=8, seed=0):
  """Labels are the argmax of one fixed random projection of x (the task); `seed` draws x."""
  proj = np.random.RandomState(123).randn(D_IN, CLASSES)
  x = np.random.RandomState(seed).randn(num_clients, n, D_IN).astype(np.float32)
  labels = np.argmax(x @ proj, axis=-1).astype(np.int32)
  mask = np.ones((num_clients, n), bool)
  if num_clients > 1:
    mask[1, 5:] = False  # uneven client sizes: n_i = 8 and 5
  return fl.ClientData(x, np.ones((num_clients, n), bool), labels, mask)


def _params():
  return nnx.to_pure_dict(nnx.state(ResidualMLP(rngs=nnx.Rngs(0))))


@pytest.mark.parametrize("loss,weighting", [("last", "paper"), ("sum", "samples"),
                                            ("last", "fedavg_naive")])
def test_mlp_round_equals_per_client_reference(loss, weighting):
  model = MLPExitModel()
  params = _params()
  assert params["layers"]["kernel"].shape == (LAYERS, WIDTH, WIDTH)
  spec = fl.RoundSpec(fl.ClientSpec(model, optax.sgd(0.3), loss=loss, local_epochs=2,
                                    batch_size=4),
                      fl.server_optimizer("fedavg", 1.0), weighting=weighting,
                      depth_levels=EXITS, chunk_size=1)
  data = _toy_data()
  depths = np.array([1, 2, 3, 1, 2, 3])
  cohort = fl.cohort_from_dataset(data, np.arange(6), depths)
  state = fl.init_server_state(params, spec.server_optimizer, jax.random.key(0))
  new, m = fl.run_round(state, cohort, spec)
  ref, mref = fl.run_round_reference(state, cohort, spec)
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(ref.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m["loss"], mref["loss"], rtol=1e-5)
  np.testing.assert_array_equal(m["num_examples"], [8, 5, 8, 8, 8, 8])
  moved = lambda a, b: float(jnp.max(jnp.abs(a - b)))
  # layer 3 is trained only by the depth-3 clients; every client trains layer 1
  assert moved(new.params["layers"]["kernel"][2], params["layers"]["kernel"][2]) > 0
  for e in range(3):  # every exit is some client's deepest, so every head is trained
    assert moved(new.params["heads"]["kernel"][e], params["heads"]["kernel"][e]) > 0


def test_mlp_learns_and_is_evaluated_per_exit():
  model = MLPExitModel()
  spec = fl.RoundSpec(fl.ClientSpec(model, optax.adam(0.05), loss="sum", local_epochs=2,
                                    batch_size=4),
                      weighting="paper", depth_levels=EXITS, chunk_size=1)
  data = _toy_data(num_clients=12, n=16, seed=1)
  depths = np.array([1, 2, 3] * 4)
  test = _toy_data(num_clients=1, n=300, seed=2)  # held-out inputs, the same task
  x, xm, y = test.inputs[0], test.input_mask[0], test.labels[0]
  state = fl.init_server_state(_params(), spec.server_optimizer, jax.random.key(0))
  before = fl.evaluate(model, state.params, x, xm, y)
  for r in range(15):
    ids = fl.sample_clients(0, r, 12, clients_per_round=6)
    state, _ = fl.run_round(state, fl.cohort_from_dataset(data, ids, depths), spec)
  after = fl.evaluate(model, state.params, x, xm, y)
  assert after["error"].shape == before["error"].shape == (3,)
  assert np.all(after["error"] < 0.2), after["error"]  # chance is 2/3
  assert np.all(after["error"] < before["error"] - 0.2), (before["error"], after["error"])


def test_a_misdeclared_layout_is_named():
  @dataclasses.dataclass(frozen=True)
  class Wrong(MLPExitModel):
    layer_path = ("blocks",)  # the stacked layers live under "layers"

  spec = fl.RoundSpec(fl.ClientSpec(Wrong(), optax.sgd(0.1)), depth_levels=EXITS)
  state = fl.init_server_state(_params(), spec.server_optimizer, jax.random.key(0))
  cohort = fl.cohort_from_dataset(_toy_data(), np.arange(3), np.array([1, 2, 3, 1, 2, 3]))
  with pytest.raises(ValueError, match="no 'layer' leaf"):
    fl.run_round(state, cohort, spec)
  with pytest.raises(TypeError, match="EarlyExitModel"):
    fl.ClientSpec("not a model")


@pytest.mark.parametrize("package,forbidden", [("fedexit_jax.federated", "fedexit_jax.models"),
                                               ("fedexit_jax.models", "fedexit_jax.federated")])
def test_the_engine_and_the_models_import_nothing_of_each_other(package, forbidden):
  code = (f"import sys, {package}; "
          f"bad = sorted(m for m in sys.modules if m.startswith('{forbidden}')); "
          "assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_the_readme_plug_in_example_runs_through_the_engine():
  readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
  code = readme.split("## Federate your own model", 1)[1].split("```python", 1)[1].split("```")[0]
  ns: dict = {}
  exec(code, ns)  # pylint: disable=exec-used
  spec = ns["spec"]
  rs = np.random.RandomState(0)
  params = {"embed": jnp.asarray(0.5 * rs.randn(D_IN, WIDTH), jnp.float32),
            "layers": {"w": jnp.asarray(0.3 * rs.randn(LAYERS, WIDTH, WIDTH), jnp.float32),
                       "b": jnp.zeros((LAYERS, WIDTH))},
            "heads": {"w": jnp.asarray(0.3 * rs.randn(3, WIDTH, CLASSES), jnp.float32)}}
  cohort = fl.cohort_from_dataset(_toy_data(), np.arange(6), np.array([1, 2, 3, 3, 2, 1]))
  state = fl.init_server_state(params, spec.server_optimizer, jax.random.key(0))
  new, m = fl.run_round(state, cohort, spec)
  ref, _ = fl.run_round_reference(state, cohort, spec)
  assert int(m["num_nonfinite"]) == 0
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(ref.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert float(jnp.max(jnp.abs(new.params["layers"]["w"][2] - params["layers"]["w"][2]))) > 0
