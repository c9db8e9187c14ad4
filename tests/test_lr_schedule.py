"""The client learning rate over rounds (federated/schedule.py): its values, that scaling the
updates is that learning rate, that the compiled round reads the server's round, and the config
and resume rules around it."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedexit_jax import checkpoint, config_utils as cu, models, pipeline
from fedexit_jax import federated as fl
from fedexit_jax.models import heads, wav2vec2
from fedexit_jax.speech_model import SpeechExitModel
from test_federated_round import CLASSES, EXITS, IDS, tiny_config, tiny_dataset

pytestmark = pytest.mark.usefixtures("fast_compiles")


def test_warmup_cosine_by_hand():
  s = fl.WarmupCosine(warmup_rounds=2, total_rounds=6, final_fraction=0.1)
  # warm-up (r + 1) / 2; then 0.1 + 0.45 * (1 + cos(pi * (r - 2) / 3)); 0.1 from round 5 on
  want = {0: 0.5, 1: 1.0, 2: 1.0, 3: 0.1 + 0.45 * 1.5, 4: 0.1 + 0.45 * 0.5, 5: 0.1, 9: 0.1}
  for r, v in want.items():
    np.testing.assert_allclose(float(s(r)), v, rtol=1e-6, err_msg=f"round {r}")
  assert float(fl.WarmupCosine(0, 1, 0.3)(0)) == pytest.approx(1.0)  # one round: the peak
  with pytest.raises(ValueError, match="warmup_rounds <= total_rounds"):
    fl.WarmupCosine(7, 6)
  with pytest.raises(ValueError, match="final_fraction"):
    fl.WarmupCosine(0, 6, 1.5)


@pytest.fixture(scope="module")
def setup():
  cfg = tiny_config()
  params, _ = models.split_params(wav2vec2.init_params(cfg, jax.random.key(0)),
                                  heads.init_exit_heads(jax.random.key(1), 32, CLASSES, len(EXITS)))
  return SpeechExitModel(cfg, EXITS), params, tiny_dataset(12)


@pytest.mark.parametrize("make", [optax.sgd, optax.adam,
                                  functools.partial(optax.sgd, momentum=0.9)])
def test_scaled_updates_are_that_learning_rate(setup, make):
  """Round 0 of a 4-round warm-up trains as the optimizer at a quarter of the rate does (three
  local steps, so the optimizer's state is carried through the scaled steps)."""
  model, params, data = setup
  lr, depth = 1e-2, 4
  sched = fl.ClientSpec(model, make(lr), local_steps=3, batch_size=2,
                        lr_schedule=fl.WarmupCosine(4, 10))
  quarter = fl.ClientSpec(model, make(lr / 4), local_steps=3, batch_size=2)
  client = fl.ClientData(*(jnp.asarray(a[0]) for a in data))
  sliced, key = sched.slice_params(params, depth), jax.random.key(3)
  a, ma = jax.jit(functools.partial(fl.train_client, sched, depth))(sliced, client, key, 0)
  b, mb = jax.jit(functools.partial(fl.train_client, quarter, depth))(sliced, client, key)
  assert int(ma.num_steps) == int(mb.num_steps) == 3
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6, rtol=1e-4)
  # a chunk of clients (the round's path) reads the same round
  chunk = fl.ClientData(*(jnp.asarray(a[:3]) for a in data))
  c, _ = jax.jit(functools.partial(fl.train_chunk, sched, depth))(
      sliced, chunk, jax.random.split(key, 3), 0)
  d, _ = jax.jit(functools.partial(fl.train_chunk, quarter, depth))(
      sliced, chunk, jax.random.split(key, 3))
  for x, y in zip(jax.tree.leaves(c), jax.tree.leaves(d)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6, rtol=1e-4)


def test_the_round_reads_the_servers_round(setup):
  """One SGD step per client: a client's delta is -lr * scale(round) * gradient, so the server's
  step (FedAvg, server rate 1) is scale(round) times the unscheduled one, at every round."""
  model, params, data = setup
  plain = fl.ClientSpec(model, optax.sgd(0.1), local_steps=1, batch_size=8)
  sched = fl.ClientSpec(model, optax.sgd(0.1), local_steps=1, batch_size=8,
                        lr_schedule=fl.WarmupCosine(4, 10, 0.1))
  depths = np.array([2, 4] * 6)
  cohort = fl.cohort_from_dataset(data, IDS, depths)
  state = fl.init_server_state(params, fl.server_optimizer("fedavg"), jax.random.key(2))

  def step(spec, r, run=fl.run_round):
    s = state._replace(round=jnp.asarray(r, jnp.int32))
    new, _ = run(s, cohort, fl.RoundSpec(spec, depth_levels=(2, 4), chunk_size=4))
    return jax.tree.map(jnp.subtract, new.params, s.params)

  ref = step(plain, 0)
  # new - old params: float32 keeps ~2^-23 of a parameter's magnitude, so the deltas (~1e-5) are
  # compared to a few ulps of the largest parameter, not to their own size
  largest = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(params))
  atol = 4 * np.finfo(np.float32).eps * largest
  # round 0: warm-up 1/4; round 5: 0.1 + 0.45 * (1 + cos(pi / 5)) = 0.914058...
  for r, scale in ((0, 0.25), (5, 0.1 + 0.45 * (1 + np.cos(np.pi / 5)))):
    got = step(sched, r)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
      np.testing.assert_allclose(np.asarray(x), scale * np.asarray(y), atol=atol, rtol=1e-4)
  # the per-client loop (the reference every simulator implements) agrees
  loop = step(sched, 5, fl.run_round_reference)
  for x, y in zip(jax.tree.leaves(loop), jax.tree.leaves(step(sched, 5))):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-4)


def test_config_builds_the_schedule_over_the_runs_rounds():
  config = cu.apply_overrides(cu.default_config(), ["rounds=30"])
  assert pipeline.lr_schedule(config) is None  # constant: the default
  on = cu.apply_overrides(config, ["client_optimizer.schedule=warmup_cosine",
                                   "client_optimizer.warmup_rounds=3",
                                   "client_optimizer.final_fraction=0.2"])
  encoder = cu.validate_config(on)
  assert pipeline.lr_schedule(on) == fl.WarmupCosine(3, 30, 0.2)
  assert pipeline.round_spec(on, encoder, (3, 6)).client.lr_schedule == fl.WarmupCosine(3, 30, 0.2)
  assert pipeline.round_spec(config, encoder, (3, 6)).client.lr_schedule is None
  with pytest.raises(cu.ConfigError, match="client_optimizer.schedule"):
    cu.validate_config(cu.apply_overrides(config, ["client_optimizer.schedule=linear"]))
  with pytest.raises(cu.ConfigError, match=r"warmup_rounds must be a whole number in \[0, rounds"):
    cu.validate_config(cu.apply_overrides(on, ["client_optimizer.warmup_rounds=31"]))


def test_resume_with_other_rounds_is_refused_under_a_schedule(tmp_path):
  """The schedule spans the run's rounds: extending a run would change the rate of the rounds
  still to run, so a resumed run would not be the run it continues."""
  config = cu.apply_overrides(cu.default_config(), ["rounds=10",
                                                    "client_optimizer.schedule=warmup_cosine"])
  state = {"w": np.zeros(3, np.float32)}
  checkpoint.save(tmp_path, 4, state, config=config)
  assert checkpoint.check_workdir(tmp_path, config, resume=True) == 4
  with pytest.raises(checkpoint.WorkdirError, match="schedule \\('warmup_cosine'\\) spans the "
                                                    "run's rounds \\(10\\)"):
    checkpoint.check_workdir(tmp_path, cu.apply_overrides(config, ["rounds=20"]), resume=True)
