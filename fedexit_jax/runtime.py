"""Process-wide JAX settings that must be in place before JAX compiles anything: the host CPU
device split and the persistent compilation cache. `train.train_and_evaluate` applies both first
thing.

CPU devices: on CPU the engine runs one client per device, so one device per core uses every
core. XLA:CPU runs a client's small matrices on one core; splitting the host into several CPU
devices lets the round's sharded chunk axis put a client on each core at once (measured back to
back on the project's 2-core box with `benchmarks/throughput.py --quick`: a 32-client round
0.711 s on one device, 0.431 s on two).

Compilation cache: a round program takes tens of seconds to compile on a laptop CPU and the same
config compiles to the same program, so compiled programs are kept on disk (JAX's persistent
compilation cache) and a second run, a resumed run or the next scenario loads them instead.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

log = logging.getLogger(__name__)


def available_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def resolve_cpu_devices(value: int | str) -> int:
  """'auto' -> the cores this process may use; an int >= 1 as is."""
  if value == "auto":
    return available_cores()
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"cpu_devices must be 'auto' or an int >= 1, got {value!r}")
  return value


def use_cpu_devices(value: int | str) -> int:
  """Splits the host into `value` CPU devices if JAX has not started yet; returns the CPU device
  count in effect. Where JAX already runs (a Python session that used it, XLA_FLAGS forcing a
  count), the existing devices are kept and a differing request is logged, not applied: the
  count changes speed, not what a round computes (1 and 8 devices agree to float rounding,
  tests/test_federated_round.py)."""
  want = resolve_cpu_devices(value)
  if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    try:
      jax.config.update("jax_num_cpu_devices", want)
    except RuntimeError:  # backends already initialised
      pass
  have = len(jax.devices("cpu"))
  if have != want:
    log.warning("cpu_devices=%s asks for %d CPU devices but JAX already runs with %d; keeping %d",
                value, want, have, have)
  return have


CACHE_ENV = "FEDEXIT_COMPILATION_CACHE"
_OFF = ("off", "none", "0", "false")
# Programs that compile faster than this are not written to disk. A 2-round default run compiles
# 75 programs: 6 take over 1 s (57 of the 60 s of compiling, the round program alone 32 s, under
# load), 67 take under 0.1 s (eager ops and small helpers, 2.9 s together: not worth a file
# each). JAX's default, 1 s, would skip the smaller of the six (1.3-1.7 s under that load) on a
# quiet or faster machine.
MIN_COMPILE_SECONDS = 0.2
# The folder is trimmed (least recently used first) beyond this size.
MAX_CACHE_BYTES = 2 << 30


def resolve_compilation_cache(value: str | None) -> Path | None:
  """The compilation cache folder for the config value, None where it is off. None: off. 'auto':
  $FEDEXIT_COMPILATION_CACHE where set (a folder, or off/none/0/false), else
  <cache_root()>/xla ($FEDEXIT_CACHE, default ~/.cache/fedexit_jax). Any other string: that
  folder."""
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (str, os.PathLike)) or not str(value):
    raise ValueError(f"compilation_cache must be a folder, 'auto' or None, got {value!r}")
  if value == "auto":
    env = os.environ.get(CACHE_ENV, "").strip()
    if env.lower() in _OFF:
      return None
    if env:
      return Path(env).expanduser().absolute()
    from fedexit_jax import config_utils  # pylint: disable=import-outside-toplevel
    return (config_utils.cache_root() / "xla").absolute()
  return Path(value).expanduser().absolute()


def use_compilation_cache(value: str | None) -> Path | None:
  """Points JAX's persistent compilation cache at the folder `value` resolves to (or turns it
  off) and returns that folder. Call it before JAX compiles: programs compiled earlier in the
  process are neither read from nor written to the new folder. Calling it again with another
  folder or None reopens or closes the cache."""
  path = resolve_compilation_cache(value)
  if path is not None:
    # JAX's defaults write only programs that took >= 1 s to compile; ours are set above. -1:
    # no size floor (0 would let JAX pick one for the filesystem).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax.config.update("jax_compilation_cache_max_size", MAX_CACHE_BYTES)
  want = (str(path) if path is not None else None, path is not None)
  if want != (jax.config.jax_compilation_cache_dir, jax.config.jax_enable_compilation_cache):
    jax.config.update("jax_compilation_cache_dir", want[0])
    jax.config.update("jax_enable_compilation_cache", want[1])
    compilation_cache.reset_cache()  # JAX opens the folder once; a new one must be reopened
  return path
