"""checkpoint.py: exact round trip, latest *finalized* step, workdir safety."""
from __future__ import annotations

import json
from pathlib import Path

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


def test_restore_into_another_models_shapes_is_one_clear_error(tmp_path, monkeypatch):
  """A target of other shapes (another head width) is a WorkdirError naming the workdir and the
  round, not orbax's screen of TensorStore specs."""
  checkpoint.save(tmp_path, 3, _state())
  other = _state()
  other["params"]["heads"]["bias"] = jnp.zeros((2, 4))
  with pytest.raises(checkpoint.WorkdirError, match=r"round 3 does not restore into this run's "
                     r"state \(ShapeMismatch: \['params'\]\['heads'\]\['bias'\] was saved as "
                     r"\(2, 3\), this run's is \(2, 4\)\)") as info:
    checkpoint.restore_latest(tmp_path, other)
  assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
  # Checked from the metadata before any array is read (a started restore leaves orbax's other
  # reads to print "Exception ignored in <coroutine ...>" inside whatever runs next).
  def no_reads(*args, **kwargs):
    raise AssertionError("the restore was started")
  monkeypatch.setattr(checkpoint, "_manager", no_reads)
  with pytest.raises(checkpoint.WorkdirError, match="ShapeMismatch"):
    checkpoint.restore_latest(tmp_path, other)


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


def _big_state(seed):
  """_state plus a leaf too large for orbax to inline in its index (> 1 KiB): a real data file."""
  state = _state(seed)
  state["params"]["big"] = jnp.asarray(np.random.default_rng(seed).normal(size=(64, 64)),
                                       jnp.float32)
  return state


def _damage(workdir, step, how):
  """Damages round `step` as a disk error or a careless hand would."""
  state = checkpoint.checkpoint_dir(workdir) / str(step) / "state"
  if how == "truncate":  # every data file of the round that holds array bytes, cut in half
    files = [f for f in (state / "ocdbt.process_0" / "d").iterdir() if f.stat().st_size > 4096]
    assert files, "no data file large enough to truncate"
    for f in files:
      with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size // 2)
  else:
    assert how == "no_metadata"
    (state / "_METADATA").unlink()


def _tree_files(root):
  return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("how", ["truncate", "no_metadata"])
def test_damaged_newest_round_is_skipped_named_and_kept(tmp_path, how, caplog):
  config = cu.default_config()
  for step in (1, 2):
    checkpoint.save(tmp_path, step, _big_state(step), config=config)
  _damage(tmp_path, 2, how)
  before = _tree_files(tmp_path / checkpoint.CHECKPOINT_DIR / "2")
  # Checking (a dry run) changes nothing.
  assert checkpoint.check_workdir(tmp_path, config, resume=True, write_config=False) == 1
  assert "round 2" in caplog.text and "damaged" in caplog.text
  assert checkpoint.all_steps(tmp_path) == [1, 2]
  # The run itself moves the damaged round aside, byte for byte, and resumes from round 1.
  assert checkpoint.check_workdir(tmp_path, config, resume=True) == 1
  assert checkpoint.all_steps(tmp_path) == [1]
  assert _tree_files(tmp_path / checkpoint.DAMAGED_DIR / "2") == before
  restored, step = checkpoint.restore_latest(tmp_path, _big_state(0))
  assert step == 1
  _assert_bit_identical(restored, _big_state(1))


def test_no_intact_round_stops_with_one_line_and_changes_nothing(tmp_path):
  config = cu.default_config()
  checkpoint.save(tmp_path, 1, _state(seed=1), config=config)
  nan_state = jax.tree.map(lambda x: x * np.nan if isinstance(x, jax.Array) and jnp.issubdtype(
      x.dtype, jnp.floating) else x, _state(seed=2))
  checkpoint.save(tmp_path, 2, nan_state, config=config)
  _damage(tmp_path, 1, "no_metadata")
  assert checkpoint.damage(tmp_path, 2).startswith("not finite")
  before = _tree_files(tmp_path)
  with pytest.raises(checkpoint.WorkdirError) as e:
    checkpoint.check_workdir(tmp_path, config, resume=True)
  msg = str(e.value)
  assert "\n" not in msg and "no checkpoint is intact" in msg
  assert "round 2: not finite" in msg and "round 1: unreadable: FileNotFoundError" in msg
  assert _tree_files(tmp_path) == before


def test_resume_with_fewer_rounds_than_done_is_refused(tmp_path, caplog):
  config = cu.apply_overrides(cu.default_config(), ["rounds=10"])
  checkpoint.save(tmp_path, 6, _state(), config=config)
  with pytest.raises(checkpoint.WorkdirError, match="rounds=4: its checkpoint is already at "
                                                    "round 6; pass --config.rounds=6 or more"):
    checkpoint.check_workdir(tmp_path, cu.apply_overrides(config, ["rounds=4"]), resume=True)
  assert checkpoint.check_workdir(tmp_path, cu.apply_overrides(config, ["rounds=6"]),
                                  resume=True) == 6
  # --resume on a workdir without checkpoint starts fresh, and says so.
  assert checkpoint.check_workdir(tmp_path / "empty", config, resume=True) is None
  assert "holds no checkpoint; starting from round 0" in caplog.text


def test_unwritable_workdir_is_refused_before_any_work(tmp_path):
  # /proc refuses new files even to root (permission bits do not stop root).
  for work in (Path("/proc/fedexit_w"), Path("/proc/self/w/x")):
    with pytest.raises(checkpoint.WorkdirError, match="is not writable"):
      checkpoint.check_workdir(work, cu.default_config(), resume=False, write_config=False)
  with pytest.raises(checkpoint.WorkdirError, match="is not a directory"):
    (tmp_path / "file").write_text("x")
    checkpoint.check_workdir(tmp_path / "file", cu.default_config(), resume=False)


def test_a_key_added_to_the_schema_later_is_no_difference_at_its_default():
  # A checkpoint written before `stop_after_excluded_rounds` and `data.test_dir` existed: the run
  # used their defaults (3 and None), so resuming it with the defaults is the same run.
  old = {"rounds": 40, "data": {"num_speakers": 212}}
  new = {"rounds": 40, "stop_after_excluded_rounds": 3,
         "data": {"num_speakers": 212, "test_dir": None}}
  assert checkpoint._config_diff(old, new) == []
  new_other = {**new, "stop_after_excluded_rounds": 5, "data": {"num_speakers": 100,
                                                                "test_dir": None}}
  assert checkpoint._config_diff(old, new_other) == [
      "data.num_speakers: 212 -> 100", "stop_after_excluded_rounds: '<absent>' -> 5"]
  # a key the current schema no longer has is still a difference
  assert checkpoint._config_diff({**old, "gone": 1}, {**new}) == ["gone: 1 -> '<absent>'"]
