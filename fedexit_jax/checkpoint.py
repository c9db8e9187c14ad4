"""Checkpoints of the server state with orbax, and the workdir safety check.

Layout: `WORKDIR/checkpoints/<round>/{state,meta}`. `state` is any pytree (server params,
optimizer state, round, RNG key); `meta` is JSON (the run's config and the round).

Crash safety: orbax writes a step into `<round>.orbax-checkpoint-tmp...` and renames it to
`<round>` only once every file is written (an atomic rename on POSIX file systems). A crash mid-
write leaves a tmp folder that `CheckpointManager.all_steps()` never lists, so `restore_latest`
always reads the newest *finalized* round. Saves here are synchronous: `save` returns after the
rename, so a round counted as saved is on disk.

Damage after the fact (a truncated data file, a deleted `_METADATA`, a disk error) is found by
`check_workdir` before any data work: every round it may resume from is read in full and checked
finite; a damaged round is named, moved to `WORKDIR/damaged_checkpoints/<round>` (kept for
inspection, never deleted) and the run resumes from the newest intact one.

Typed PRNG keys (`jax.random.key`) cannot be serialised; they are stored as their raw key data
and re-wrapped with the key implementation of the restore target.
"""
from __future__ import annotations

import gc
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from fedexit_jax import config_utils
from fedexit_jax.federated.model import path_keys

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "damaged_checkpoints"
CONFIG_FILE = "config.json"
# Keys that may change when a run is resumed (extending a run, checkpointing more often, where
# compiled programs and conv features are kept, how many processes run it: a 2-process run may
# resume in one).
RESUMABLE_KEYS = ("rounds", "checkpoint_every", "max_checkpoints", "progress_bar",
                  "compilation_cache", "feature_cache", "distributed")


class WorkdirError(ValueError):
  """The workdir holds another run's checkpoint, or --resume cannot continue from it."""


def checkpoint_dir(workdir: str | Path) -> Path:
  return Path(workdir).resolve() / CHECKPOINT_DIR


def _manager(workdir: str | Path, max_to_keep: int | None = None,
             create: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def _is_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_savable(x: Any) -> Any:
  """Raw data for PRNG keys; numpy arrays for python/numpy scalars (orbax wants arrays)."""
  if _is_key(x):
    return jax.random.key_data(x)
  if isinstance(x, (int, float, bool, np.generic)):
    return np.asarray(x)
  return x


def _from_restored(x: Any, like: Any) -> Any:
  if _is_key(like):
    return jax.random.wrap_key_data(jnp.asarray(x), impl=jax.random.key_impl(like))
  if isinstance(like, (bool, int, float)):
    return type(like)(np.asarray(x).item())
  if isinstance(like, np.generic):
    return np.asarray(x).astype(like.dtype)[()]
  if isinstance(like, np.ndarray):
    return np.asarray(x)
  return x


def save(workdir: str | Path, step: int, state: Any, *,
         config: ml_collections.ConfigDict | None = None, max_to_keep: int | None = 2) -> bool:
  """Writes `state` (any pytree of arrays/scalars/PRNG keys) as round `step`, atomically.

  Keeps the newest `max_to_keep` finalized rounds (None: all). A round already on disk is never
  overwritten: then nothing is written and False is returned (a resumed run re-reaching the
  round it restored computes the same state).
  """
  if int(step) in all_steps(workdir):
    return False
  meta = {"step": int(step)}
  if config is not None:
    meta["config"] = json.loads(config_utils.config_to_json(config))
  mngr = _manager(workdir, max_to_keep)
  mngr.save(int(step), args=ocp.args.Composite(
      state=ocp.args.StandardSave(jax.tree.map(_to_savable, state)),
      meta=ocp.args.JsonSave(meta)))
  mngr.wait_until_finished()
  mngr.close()
  return True


def all_steps(workdir: str | Path) -> list[int]:
  """Finalized checkpoint rounds, ascending. Orbax writes a round into
  `<round>.orbax-checkpoint-tmp-*` and renames it to `<round>` when complete, so the rounds are
  the folders named by a number alone. Listed directly, not through a CheckpointManager: in a
  multi-process run every manager waits for the other processes, and only saving and restoring
  happen in step on all of them."""
  folder = checkpoint_dir(workdir)
  if not folder.is_dir():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())


def latest_step(workdir: str | Path) -> int | None:
  steps = all_steps(workdir)
  return steps[-1] if steps else None


def restore(workdir: str | Path, step: int, target_like: Any) -> Any:
  """The state saved at round `step`, with the structure, dtypes and key types of `target_like`;
  WorkdirError, naming the round and the first unreadable array, where it does not restore into
  that (another model's shapes, a damaged file)."""
  target = jax.tree.map(_to_savable, target_like)
  mismatch = _shape_mismatch(workdir, step, target)
  if mismatch is not None:
    raise WorkdirError(f"{workdir}: round {step} does not restore into this run's state "
                       f"({mismatch})")
  mngr = _manager(workdir, create=False)
  try:
    restored = mngr.restore(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))
  except Exception as e:  # pylint: disable=broad-except  # orbax/tensorstore raise many types
    raise WorkdirError(f"{workdir}: round {step} does not restore into this run's state "
                       f"({_read_failure(e)})") from None
  finally:
    mngr.close()
  return jax.tree.map(_from_restored, restored.state, target_like)


def _shape_mismatch(workdir: str | Path, step: int, target: Any) -> str | None:
  """The first array of `target` saved at round `step` with another shape, or None. Checked from
  the saved metadata before any array is read: a restore into the wrong shapes fails one read and
  leaves orbax's other reads to fail later as "Exception ignored in <coroutine>" screens, printed
  by whatever runs next. Unreadable metadata is left to the restore to report."""
  handler = ocp.StandardCheckpointHandler()
  try:
    saved = handler.metadata(checkpoint_dir(workdir) / str(int(step)) / "state")
  except Exception:  # pylint: disable=broad-except  # the restore names what is wrong
    return None
  finally:
    handler.close()
  shapes = {_names(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(saved)[0]
            if getattr(x, "shape", None) is not None}
  for p, x in jax.tree_util.tree_flatten_with_path(target)[0]:
    have = shapes.get(_names(p))
    if have is not None and have != tuple(np.shape(x)):
      return (f"ShapeMismatch: {jax.tree_util.keystr(p)} was saved as {have}, this run's is "
              f"{tuple(np.shape(x))}")
  return None


def _names(path) -> tuple[str, ...]:  # a NamedTuple's field and orbax's saved dict key match
  return tuple(map(str, path_keys(path)))


def restore_latest(workdir: str | Path, target_like: Any) -> tuple[Any, int] | None:
  """(state, round) of the newest finalized checkpoint, or None if there is none."""
  step = latest_step(workdir)
  if step is None:
    return None
  return restore(workdir, step, target_like), step


def damage(workdir: str | Path, step: int) -> str | None:
  """Why round `step` cannot be resumed (a file that does not read back, a non-finite value), or
  None if it is intact. Reads every array of the round, without a target (no model needed)."""
  # A damaged array fails several concurrent reads; orbax raises the first and Python would print
  # the others as "Exception ignored in <coroutine>" screens of TensorStore specs: silenced here.
  hook, sys.unraisablehook = sys.unraisablehook, lambda _: None
  try:
    mngr = _manager(workdir, create=False)
    try:
      restored = mngr.restore(int(step), args=ocp.args.Composite(
          state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    finally:
      mngr.close()
  except Exception as e:  # pylint: disable=broad-except  # orbax/tensorstore raise many types
    return f"unreadable: {_read_failure(e)}"
  finally:
    gc.collect()
    sys.unraisablehook = hook
  if not isinstance(restored.meta, dict) or restored.meta.get("step") != int(step):
    return "unreadable: its meta/ item is not this round's"
  bad = [jax.tree_util.keystr(path) for path, x in jax.tree_util.tree_flatten_with_path(
      restored.state)[0] if np.issubdtype(np.asarray(x).dtype, np.inexact)
         and not np.all(np.isfinite(np.asarray(x)))]
  if bad:
    return f"not finite ({len(bad)} array(s), e.g. {bad[0]})"
  return None


def _read_failure(e: BaseException) -> str:
  while e.__cause__ is not None:  # TensorStore's own reason, not orbax's wrapper
    e = e.__cause__
  return f"{type(e).__name__}: {_first_line(e)}"


def _first_line(e: BaseException, limit: int = 160) -> str:
  text = (str(e).strip().splitlines() or [""])[0]
  return text if len(text) <= limit else text[:limit] + "..."


def newest_intact(workdir: str | Path) -> tuple[int | None, list[tuple[int, str]]]:
  """(newest intact round or None, [(damaged round, why), ...] newer than it, newest first)."""
  damaged = []
  for step in reversed(all_steps(workdir)):
    why = damage(workdir, step)
    if why is None:
      return step, damaged
    damaged.append((step, why))
  return None, damaged


def set_aside(workdir: str | Path, step: int) -> Path:
  """Moves a damaged round out of orbax's sight, to WORKDIR/damaged_checkpoints/<round>[.n]."""
  dest_dir = Path(workdir).resolve() / DAMAGED_DIR
  dest_dir.mkdir(exist_ok=True)
  dest, n = dest_dir / str(step), 1
  while dest.exists():
    dest, n = dest_dir / f"{step}.{n}", n + 1
  shutil.move(str(checkpoint_dir(workdir) / str(step)), str(dest))
  return dest


def load_meta(workdir: str | Path, step: int | None = None) -> dict[str, Any] | None:
  """The JSON metadata ({"step", "config"}) saved with round `step` (default: the latest)."""
  step = latest_step(workdir) if step is None else step
  if step is None:
    return None
  mngr = _manager(workdir, create=False)
  restored = mngr.restore(int(step), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
  mngr.close()
  return dict(restored.meta)


_ABSENT = "<absent>"


def _config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "",
                 defaults: dict[str, Any] | None = None) -> list[str]:
  """'key: old -> new' for every value that differs. A key the saved config lacks counts as no
  difference when the new value is that key's default in configs/default.py: the key was added
  to the schema after the checkpoint was written, and its default is what the run used."""
  if defaults is None:
    defaults = json.loads(config_utils.config_to_json(config_utils.default_config()))
  diffs = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
    d = defaults.get(key, _ABSENT) if isinstance(defaults, dict) else _ABSENT
    if isinstance(a, dict) and isinstance(b, dict):
      diffs.extend(_config_diff(a, b, f"{prefix}{key}.", d if isinstance(d, dict) else {}))
    elif a == _ABSENT and d != _ABSENT and b == d:
      continue
    elif a != b:
      diffs.append(f"{prefix}{key}: {a!r} -> {b!r}")
  return diffs


def _check_writable(workdir: Path) -> None:
  """WorkdirError unless a file can be created in `workdir` (or the nearest existing folder above
  it, where it will be made). Tries it: permission bits say nothing to root or on a read-only mount."""
  probe = workdir
  while not probe.exists() and probe != probe.parent:
    probe = probe.parent
  try:
    with tempfile.TemporaryFile(dir=probe):
      pass
  except OSError as e:
    where = "" if probe == workdir else f" (it would be created in {str(probe)!r})"
    raise WorkdirError(f"workdir {str(workdir)!r} is not writable{where}: "
                       f"{e.strerror or e}") from None


def check_workdir(workdir: str | Path, config: ml_collections.ConfigDict,
                  resume: bool, write_config: bool = True) -> int | None:
  """Decides, before any work, whether `config` may run in `workdir`. Returns the round to resume
  from (None: start from scratch).

  - the workdir (or the folder it will be made in) must be writable, else WorkdirError;
  - no checkpoint: start fresh (also with --resume, so a restart script can always pass it; a
    warning says so);
  - a checkpoint and no --resume: WorkdirError (never overwrite another run silently);
  - a checkpoint and --resume: the newest *intact* round (see `damage`; damaged newer rounds are
    named in a warning and, with `write_config`, set aside); its config must equal `config`
    except RESUMABLE_KEYS, and `rounds` must not be below it, else WorkdirError.
  With `write_config`, creates the workdir and writes `WORKDIR/config.json` (this run's config).
  """
  workdir = Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f"workdir {str(workdir)!r} exists and is not a directory")
  _check_writable(workdir)
  step, damaged = latest_step(workdir), []
  if step is not None and resume:
    step, damaged = newest_intact(workdir)
    if step is None:
      raise WorkdirError(
          f"cannot --resume in {str(workdir)!r}: no checkpoint is intact ("
          + "; ".join(f"round {s}: {why}" for s, why in damaged)
          + "). Nothing was changed; start again in a new --workdir.")
  new = json.loads(config_utils.config_to_json(config))
  if step is not None:
    try:
      old = (load_meta(workdir, step) or {}).get("config")
    except Exception:  # pylint: disable=broad-except  # a damaged meta/: refused all the same
      old = None
    diffs = _config_diff(old, new) if old is not None else ["<no config saved>"]
    if not resume:
      what = ("a checkpoint of another run (different config: " + "; ".join(diffs[:5]) + ")"
              if diffs else "a checkpoint of this same config")
      raise WorkdirError(
          f"workdir {str(workdir)!r} already holds {what} at round {step}. Pass --resume to "
          "continue it, or choose a new --workdir (nothing was overwritten).")
    blocking = [d for d in diffs if d.split(":")[0].split(".")[0] not in RESUMABLE_KEYS]
    if blocking:
      raise WorkdirError(
          f"cannot --resume in {str(workdir)!r}: its checkpoint (round {step}) was made with a "
          f"different config: {'; '.join(blocking)}. Only {list(RESUMABLE_KEYS)} may change on "
          "resume; use a new --workdir for a different run.")
    if (any(d.split(":")[0] == "rounds" for d in diffs)
        and config.client_optimizer.schedule != "constant"):
      raise WorkdirError(
          f"cannot --resume in {str(workdir)!r} with rounds={config.rounds}: the client learning "
          f"rate schedule ({config.client_optimizer.schedule!r}) spans the run's rounds "
          f"({old['rounds']}), so other rounds would change the rate of the rounds still to run; "
          "resume with the same rounds, or start a new --workdir.")
    if config.rounds < step:
      raise WorkdirError(
          f"cannot --resume in {str(workdir)!r} with rounds={config.rounds}: its checkpoint is "
          f"already at round {step}; pass --config.rounds={step} or more.")
  elif resume:
    log.warning("--resume: %s holds no checkpoint; starting from round 0", workdir)
  for bad, why in damaged:
    log.warning("checkpoint round %d in %s is damaged (%s): skipped, resuming from round %d%s",
                bad, checkpoint_dir(workdir), why, step,
                f"; it is moved to {DAMAGED_DIR}/{bad}" if write_config else "")
  if write_config:
    for bad, _ in damaged:
      set_aside(workdir, bad)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / CONFIG_FILE).write_text(json.dumps(new, indent=2, sort_keys=True) + "\n")
  return step if resume else None
