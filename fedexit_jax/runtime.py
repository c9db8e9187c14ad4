"""Process-wide JAX settings that must be in place before JAX compiles anything: the host CPU
device split, the persistent compilation cache and, for multi-process runs, joining the other
processes. `train.train_and_evaluate` applies them first thing.

CPU devices: on CPU the engine runs one client (two from 256 wide) per device at a time, so one
device per core uses every core. XLA:CPU runs a client's small matrices on one core; splitting
the host into several CPU devices lets the round's sharded chunk axis put a client on each core
at once (measured back to back on the project's 2-core box with `benchmarks/throughput.py
--quick`: a 32-client round 0.711 s on one device, 0.431 s on two).

Compilation cache: a round program takes tens of seconds to compile on a laptop CPU and the same
config compiles to the same program, so compiled programs are kept on disk (JAX's persistent
compilation cache) and a second run, a resumed run or the next scenario loads them instead.

Multi-process: a run larger than one host (or a host split into processes) joins through
jax.distributed; the round's client axis then spans the devices of every process, each process
places only its own shards, process 0 writes the files and all write the checkpoints (orbax's
multi-process save).
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
  have = len(jax.local_devices(backend="cpu"))
  if have != want:
    log.warning("cpu_devices=%s asks for %d CPU devices but JAX already runs with %d; keeping %d",
                value, want, have, have)
  return have


CACHE_ENV = "FEDEXIT_COMPILATION_CACHE"
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
  from fedexit_jax import config_utils  # pylint: disable=import-outside-toplevel
  return config_utils.resolve_cache_folder(value, CACHE_ENV, "xla", "compilation_cache")


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


# Where more than this share of the kernel's per-process cap on memory regions is in use, a new
# run first drops the compiled programs JAX holds (release_programs_if_crowded).
CROWDED_FRACTION = 0.5


def mapped_regions(maps: str | Path = "/proc/self/maps",
                   cap: str | Path = "/proc/sys/vm/max_map_count") -> tuple[int, int] | None:
  """(memory regions this process maps, the kernel's cap on them: vm.max_map_count), or None
  where /proc does not tell (not Linux)."""
  try:
    with open(maps, "rb") as f:
      used = sum(1 for _ in f)
    with open(cap) as f:
      limit = int(f.read())
  except (OSError, ValueError):
    return None
  return used, limit


def release_programs_if_crowded(fraction: float = CROWDED_FRACTION) -> bool:
  """Clears JAX's caches of compiled programs (jax.clear_caches) where this process maps more
  than `fraction` of vm.max_map_count regions; returns whether it did.

  Why: XLA:CPU maps each program it compiles or loads from the compilation cache into memory
  regions of its own (about 6 for a small program; the default run's programs ~2,200 together)
  and keeps them while JAX's caches hold the program. Linux caps a process at vm.max_map_count
  regions (65,530 by default); at the cap XLA's code loader fails and the process dies of a
  segfault or abort. A process that runs many different programs (a sweep of configs in one
  Python session, a test worker) gets there; measured: a pytest-xdist worker reached 64,442
  regions after ~430 tests and died writing a program to the cache. Cleared programs are traced
  again when next called (and loaded from the persistent compilation cache where kept there)."""
  counts = mapped_regions()
  if counts is None or counts[0] <= fraction * counts[1]:
    return False
  jax.clear_caches()
  after = mapped_regions()
  log.info("released JAX's compiled programs: %d of the %d memory regions a process may map "
           "were in use, %s now", counts[0], counts[1], after[0] if after else "?")
  return True


class DistributedError(RuntimeError):
  """This process could not join (or stay in) a multi-process run."""


# JAX's cluster detectors that are trusted to start a run by themselves: the environment names
# the processes of one job. (Kubernetes and mpi4py detection are left out: a plain pod or an
# installed mpi4py is no multi-process job.)
_CLUSTERS = ("OmpiCluster", "SlurmCluster", "GceTpuCluster", "GkeTpuCluster")


def detected_cluster() -> str | None:
  """The name of the multi-process job JAX's cluster detection finds (more than one process),
  or None."""
  try:
    from jax._src import clusters  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  for cls in getattr(clusters.ClusterEnv, "_cluster_types", ()):
    if cls.__name__ not in _CLUSTERS:
      continue
    try:
      if cls.is_env_present() and cls.get_process_count() > 1:
        return cls.__name__
    except Exception:  # pylint: disable=broad-except  # a half-set environment: not a job
      continue
  return None


def use_distributed(cfg) -> tuple[int, int]:
  """Joins a multi-process JAX run if the config (`distributed.coordinator`, `num_processes`,
  `process_id`) or the environment (detected_cluster, with `distributed.detect`) asks for one;
  returns (process_index, process_count). Call it before JAX runs anything (before
  use_cpu_devices, which starts the CPU backend). On CPU the processes
  reduce over gloo. Every process then sees every device (jax.devices()) and owns its local ones.
  """
  if jax.distributed.is_initialized():
    return jax.process_index(), jax.process_count()
  cluster = detected_cluster() if cfg.detect and not cfg.coordinator else None
  if not cfg.coordinator and cluster is None:
    return 0, 1
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = dict(initialization_timeout=int(cfg.initialization_timeout),
                heartbeat_timeout_seconds=int(cfg.heartbeat_timeout))
  if cfg.coordinator:
    kwargs.update(coordinator_address=cfg.coordinator, num_processes=int(cfg.num_processes),
                  process_id=int(cfg.process_id))
  where = (f"process {cfg.process_id} of {cfg.num_processes} at {cfg.coordinator}"
           if cfg.coordinator else f"the {cluster} job")
  try:
    jax.distributed.initialize(**kwargs)
  except Exception as e:  # pylint: disable=broad-except  # XLA raises its own runtime errors
    raise DistributedError(
        f"could not join {where} (distributed.initialization_timeout="
        f"{cfg.initialization_timeout} s): {' '.join(str(e).split())[:300]}") from None
  log.info("joined %s: process %d of %d, %d local / %d global devices", where,
           jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())
  return jax.process_index(), jax.process_count()


def is_primary() -> bool:
  """Process 0 writes the run's files (metrics, summary, plots, run info); every process takes
  part in the rounds and the checkpoints."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the same `name` (no-op in a one-process run)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


def primary_first(name: str, make):
  """make() on process 0, then on the others: what process 0 writes to a cache folder (the
  offline corpus, the conv features) the others read instead of writing it at the same time."""
  if jax.process_count() == 1:
    return make()
  if is_primary():
    out = make()
    barrier(name)
    return out
  barrier(name)
  return make()


def local_copy(tree):
  """This process's copy of a tree of replicated global arrays (one device's): for work every
  process does alone, such as evaluating the global model on the test set."""
  if jax.process_count() == 1:
    return tree
  return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)
