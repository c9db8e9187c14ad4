"""checkpoint.py: exact round trip, latest *finalized* step, workdir safety."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedexit_jax import checkpoint
from fedexit_jax import config_utils as cu


_OPT = optax.adam(1e-3)


@jax.jit
def _adam_state_after_one_update(params):
  grads = jax.tree.map(lambda x: jnp.ones_like(x) * 0.5, params)
  return _OPT.update(grads, _OPT.init(params), params)[1]


def _state(seed=0):
  r = np.random.default_rng(seed)
  params = {"encoder": {"layers": {"w": jnp.asarray(r.normal(size=(3, 4, 5)), jnp.float32)}},
            "heads": {"kernel": jnp.asarray(r.normal(size=(2, 5, 3)), jnp.bfloat16),
                      "bias": jnp.zeros((2, 3))}}
  # mu/nu/count after one real update, so they are not trivial.
  return {"params": params, "opt_state": _adam_state_after_one_update(params),
          "round": np.int64(7 + seed), "rng": jax.random.fold_in(jax.random.key(seed), 99),
          "legacy_rng": jax.random.PRNGKey(seed)}


def _assert_bit_identical(a, b):
  la, ta = jax.tree.flatten(a)
  lb, tb = jax.tree.flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      assert jnp.issubdtype(y.dtype, jax.dtypes.prng_key)
      assert jax.random.key_impl(x) == jax.random.key_impl(y)
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    assert x.tobytes() == y.tobytes()


def test_round_trip_is_bit_identical(tmp_path):
  state = _state()
  assert checkpoint.save(tmp_path, 7, state) is True
  assert checkpoint.save(tmp_path, 7, _state(seed=3)) is False  # never overwrites a round
  restored, step = checkpoint.restore_latest(tmp_path, _state(seed=1))  # target: other values
  assert step == 7
  _assert_bit_identical(restored, state)
  assert isinstance(restored["opt_state"][0], optax.ScaleByAdamState)
  assert int(restored["opt_state"][0].count) == 1
  # The restored key draws the same numbers.
  np.testing.assert_array_equal(jax.random.normal(restored["rng"], (4,)),
                                jax.random.normal(state["rng"], (4,)))


def test_restore_latest_none_without_checkpoint(tmp_path):
  assert checkpoint.restore_latest(tmp_path / "nothing", _state()) is None
  assert checkpoint.latest_step(tmp_path) is None


def test_restore_ignores_unfinished_tmp_step_and_keeps_max(tmp_path):
  for step in (2, 4, 6):
    checkpoint.save(tmp_path, step, _state(seed=step), max_to_keep=2)
  assert checkpoint.all_steps(tmp_path) == [4, 6]  # max_to_keep dropped round 2
  # A crash mid-write of round 8 leaves orbax's tmp folder (both naming styles), with garbage.
  for name in ("8.orbax-checkpoint-tmp-1712345678", "9.orbax-checkpoint-tmp"):
    tmp = tmp_path / checkpoint.CHECKPOINT_DIR / name / "state"
    tmp.mkdir(parents=True)
    (tmp / "garbage").write_bytes(b"\x00\x01 half written")
  assert checkpoint.latest_step(tmp_path) == 6
  restored, step = checkpoint.restore_latest(tmp_path, _state())
  assert step == 6
  _assert_bit_identical(restored, _state(seed=6))


def test_saved_config_and_workdir_checks(tmp_path):
  config = cu.default_config()
  # Fresh workdir: start from scratch, config.json written.
  assert checkpoint.check_workdir(tmp_path, config, resume=False) is None
  assert json.loads((tmp_path / "config.json").read_text())["rounds"] == config.rounds
  checkpoint.save(tmp_path, 3, _state(), config=config)
  assert checkpoint.load_meta(tmp_path)["config"]["weighting"] == "paper"

  # Same config, no --resume: refuse to overwrite.
  with pytest.raises(checkpoint.WorkdirError, match="same config at round 3.*--resume"):
    checkpoint.check_workdir(tmp_path, config, resume=False)
  # Another run's config, no --resume: the error names the differing keys.
  other = cu.apply_overrides(config, ["weighting=uniform"])
  with pytest.raises(checkpoint.WorkdirError, match="another run.*weighting: 'paper' -> 'uniform'"):
    checkpoint.check_workdir(tmp_path, other, resume=False)
  # --resume with a different config: refused; with more rounds: fine.
  with pytest.raises(checkpoint.WorkdirError, match="cannot --resume.*weighting"):
    checkpoint.check_workdir(tmp_path, other, resume=True)
  longer = cu.apply_overrides(config, [f"rounds={config.rounds * 2}"])
  assert checkpoint.check_workdir(tmp_path, longer, resume=True) == 3
  # --resume with nothing to resume starts fresh.
  assert checkpoint.check_workdir(tmp_path / "new", config, resume=True) is None
