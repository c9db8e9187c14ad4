"""R simulations in one compiled round (federated.replicas) against R separate rounds."""

import jax
import numpy as np
import pytest

from fedexit_jax import federated as fl
from fedexit_jax.federated import aggregate, replicas
from test_federated_round import setup, tiny_dataset  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("fast_compiles")

SCHEMES = ("paper", "fedavg_naive", "samples", "uniform", "depth")


def test_scheme_vector_gives_each_schemes_weights():
  n = np.array([3.0, 5.0, 0.0])
  d = np.array([2.0, 4.0, 4.0])
  for scheme in aggregate.SCHEMES:
    np.testing.assert_array_equal(
        aggregate.client_weights_from_vector(aggregate.scheme_vector(scheme), n, d),
        aggregate.client_weights(scheme, n, d))
    assert bool(aggregate.scheme_vector(scheme)[2]) == aggregate.counts_untrained(scheme)
  # by hand: paper n*d, samples n, uniform 1, depth d; no examples -> 0
  np.testing.assert_array_equal(aggregate.client_weights_from_vector(
      aggregate.scheme_vector("paper"), n, d), [6.0, 20.0, 0.0])
  np.testing.assert_array_equal(aggregate.client_weights_from_vector(
      aggregate.scheme_vector("depth"), n, d), [2.0, 4.0, 0.0])


ONE_DEVICE = r"""
import dataclasses
import jax, numpy as np
from fedexit_jax import federated as fl
from test_federated_round import assert_trees_close, tiny_dataset
from test_replicas import SCHEMES, tiny_setup
assert jax.device_count() == 1
spec, state, dataset, depths = tiny_setup()
resident = fl.place_dataset(dataset, spec)
r = len(SCHEMES)
ids = [[0, 1, 2, 3, 4, 5, 6, 8, 9, 11], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
for batch in (1, 2):
  # five schemes, each replica its own RNG and cohort, two rounds
  states = [state._replace(rng=jax.random.key(10 + i)) for i in range(r)]
  separate, stacked = list(states), fl.stack_states(states)
  for k in range(2):
    cohorts = [fl.cohort_from_dataset(resident, ids[(i + k) % 2], depths) for i in range(r)]
    stacked, m = fl.run_replicas(stacked, cohorts, spec, SCHEMES, batch=batch)
    for i, scheme in enumerate(SCHEMES):
      separate[i], mi = fl.run_round(separate[i], cohorts[i],
                                     dataclasses.replace(spec, weighting=scheme))
      np.testing.assert_allclose(m["loss"][i], mi["loss"], rtol=1e-5, atol=1e-6)
      np.testing.assert_array_equal(m["weight"][i], mi["weight"])  # small ints: exact
      np.testing.assert_array_equal(m["num_steps"][i], mi["num_steps"])
      np.testing.assert_array_equal(m["client_id"][i], mi["client_id"])
  for i in range(r):
    got = fl.unstack_state(stacked, i)
    assert_trees_close(got.params, separate[i].params)
    np.testing.assert_array_equal(jax.random.key_data(got.rng),
                                  jax.random.key_data(separate[i].rng))
  # the schemes did move the replicas apart (a check that could fail)
  a, b = (fl.unstack_state(stacked, i).params for i in (0, 1))
  assert max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))) > 1e-4
# replicas of other seeds: each its own partition (a dataset of the same shape)
datasets = [fl.place_dataset(tiny_dataset(12, seed=s), spec) for s in (3, 4)]
states = [state, state._replace(rng=jax.random.key(7))]
cohorts = [fl.cohort_from_dataset(datasets[i], [0, 1, 2, 3, 5, 7], depths) for i in range(2)]
stacked, m = fl.run_replicas(fl.stack_states(states), cohorts, spec, ("paper", "paper"))
for i in range(2):
  ref, mi = fl.run_round(states[i], cohorts[i], spec)
  assert_trees_close(fl.unstack_state(stacked, i).params, ref.params)
  np.testing.assert_allclose(m["mean_loss"][i], mi["mean_loss"], rtol=1e-5)
print("ONE_DEVICE_OK")
"""


def tiny_setup():
  """test_federated_round's setup, outside pytest (for the fresh processes below)."""
  import optax
  from fedexit_jax import models
  from fedexit_jax.models import heads, wav2vec2
  from fedexit_jax.speech_model import SpeechExitModel
  from test_federated_round import CLASSES, EXITS, tiny_config
  cfg = tiny_config()
  params, _ = models.split_params(wav2vec2.init_params(cfg, jax.random.key(0)),
                                  heads.init_exit_heads(jax.random.key(1), 32, CLASSES, len(EXITS)))
  client = fl.ClientSpec(SpeechExitModel(cfg, EXITS), optax.sgd(0.1), loss="last", local_epochs=2,
                         batch_size=4)
  spec = fl.RoundSpec(client, weighting="paper", depth_levels=(2, 4), chunk_size=4)
  state = fl.init_server_state(params, spec.server_optimizer, jax.random.key(2))
  return spec, state, tiny_dataset(12), np.array([2, 4] * 6)


def _fresh_process(script: str, devices: int, ok: str):
  """Runs `script` in a new Python with `devices` CPU devices (a worker's device count is fixed
  when it starts). The one-device test once ran in the worker and died there twice (2026-12-01):
  the worker had reached the kernel's cap on memory regions, which conftest now guards against
  (runtime.release_programs_if_crowded); it stays in a fresh process, which costs a few seconds."""
  import os
  import subprocess
  import sys
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
  here = os.path.dirname(os.path.abspath(__file__))
  env["PYTHONPATH"] = os.pathsep.join(
      [p for p in (env.get("PYTHONPATH"), here, os.path.dirname(here)) if p])
  r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                     timeout=900)
  assert ok in r.stdout, r.stdout[-2000:] + r.stderr[-4000:]


def test_replicas_equal_separate_rounds():
  """One device: five schemes with their own RNG and cohorts over two rounds, all replicas in
  one program (batch 1: one after another; 2: two vmapped), equal their own run_round calls;
  replicas with their own datasets (other seeds) too."""
  _fresh_process(ONE_DEVICE, 1, "ONE_DEVICE_OK")


def test_replicas_refuse_mismatched_inputs(setup):  # noqa: F811
  _, spec, state, dataset, depths = setup
  resident = fl.place_dataset(dataset, spec)
  two = fl.stack_states([state, state])
  c6 = fl.cohort_from_dataset(resident, range(6), depths)
  c8 = fl.cohort_from_dataset(resident, range(8), depths)
  with pytest.raises(ValueError, match="same size"):
    fl.run_replicas(two, [c6, c8], spec, ("paper", "paper"))
  with pytest.raises(ValueError, match="one of each per replica"):
    fl.run_replicas(two, [c6], spec, ("paper",))
  with pytest.raises(ValueError, match="homogeneous"):
    fl.run_replicas(two, [c6, c6], spec, ("paper", "homogeneous"))
  assert replicas.default_batch(8, "cpu") == 1 and replicas.default_batch(8, "gpu") == 8


SPREAD = r"""
import dataclasses, sys
import jax, numpy as np, optax
from fedexit_jax import federated as fl, models
from fedexit_jax.models import heads, wav2vec2
from fedexit_jax.speech_model import SpeechExitModel
from test_federated_round import EXITS, CLASSES, tiny_config, tiny_dataset
assert jax.device_count() == 2
cfg = tiny_config()
params, _ = models.split_params(wav2vec2.init_params(cfg, jax.random.key(0)),
                                heads.init_exit_heads(jax.random.key(1), 32, CLASSES, len(EXITS)))
client = fl.ClientSpec(SpeechExitModel(cfg, EXITS), optax.sgd(0.1), loss="last", local_epochs=2,
                       batch_size=4)
spec = fl.RoundSpec(client, depth_levels=(2, 4))
state = fl.init_server_state(params, spec.server_optimizer, jax.random.key(2))
depths = np.array([2, 4] * 6)
schemes = ("paper", "fedavg_naive", "uniform")  # 3 replicas on 2 devices: one padding replica
for shared in (True, False):
  data = [fl.place_dataset(tiny_dataset(12, seed=s if not shared else 0), spec) for s in range(3)]
  states = [state._replace(rng=jax.random.key(5 + i)) for i in range(3)]
  cohorts = [fl.cohort_from_dataset(data[i], [[0, 1, 2, 3, 4, 6], [1, 2, 5, 7, 8, 9]][i % 2],
                                    depths) for i in range(3)]
  if shared:
    cohorts = [fl.cohort_from_dataset(data[0], c.client_ids, depths) for c in cohorts]
  stacked, m = fl.run_replicas(fl.stack_states(states), cohorts, spec, schemes)
  for i, w in enumerate(schemes):
    ref, mr = fl.run_round(states[i], cohorts[i], dataclasses.replace(spec, weighting=w))
    for a, b in zip(jax.tree.leaves(fl.unstack_state(stacked, i).params), jax.tree.leaves(ref.params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(m["loss"][i]), np.asarray(mr["loss"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(m["weight"][i]), np.asarray(mr["weight"]))
  assert np.asarray(m["loss"]).shape[0] == 3
print("SPREAD_OK")
"""


def test_replicas_spread_over_two_devices_equal_separate_rounds():
  """On 2 devices the replicas are split over the devices (3 replicas: one padding copy whose
  result is dropped), with one shared dataset and with each replica's own; every replica equals
  its own run_round on the same 2-device mesh."""
  _fresh_process(SPREAD, 2, "SPREAD_OK")
