"""Host CPU devices: on CPU the engine runs one client per device, so one device per core uses
every core.

XLA:CPU runs a client's small matrices on one core; splitting the host into several CPU devices
lets the round's sharded chunk axis put a client on each core at once (measured back to back on
the project's 2-core box with `benchmarks/throughput.py --quick`: a 32-client round 0.711 s on
one device, 0.431 s on two). The count must be set before JAX first runs anything, so
`train.train_and_evaluate` applies it first thing.
"""
from __future__ import annotations

import logging
import os

import jax

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
