"""`fedexit launch --local N -- run ARGS...`: N processes of one run on this machine.

For tests, and for users who split a big host into processes (one per GPU or socket): each
process runs `fedexit run ARGS` joined to the others through jax.distributed, with process 0 as
coordinator on 127.0.0.1. On a cluster (SLURM, Open MPI, Cloud TPU) start `fedexit run` once
per process with the cluster's own launcher instead: JAX detects the job.

The launcher watches its processes: when one exits with an error, the others are stopped and
the launch fails naming it. A process left waiting on a dead peer would otherwise hang in a
collective until JAX's heartbeat timeout.
"""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from typing import Sequence

from fedexit_jax import runtime


class LaunchError(RuntimeError):
  """A process of the launched run failed (the others were stopped)."""


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def local_commands(num_processes: int, run_args: Sequence[str], port: int) -> list[list[str]]:
  """One `fedexit run` command line per process. Each gets the host's cores divided among the
  processes as CPU devices, unless run_args set cpu_devices."""
  args = list(run_args)
  if not args or args[0] != "run":
    raise LaunchError(f"fedexit launch runs `run ...` (got {' '.join(args) or 'nothing'}): "
                     "fedexit launch --local N -- run --workdir DIR [--config ...]")
  if not any(a.startswith("--config.cpu_devices") for a in args):
    args.append(f"--config.cpu_devices={max(1, runtime.available_cores() // num_processes)}")
  return [[sys.executable, "-m", "fedexit_jax.cli", *args,
           f"--config.distributed.coordinator=127.0.0.1:{port}",
           f"--config.distributed.num_processes={num_processes}",
           f"--config.distributed.process_id={i}"] for i in range(num_processes)]


def supervise(commands: Sequence[Sequence[str]], poll_seconds: float = 0.2,
              grace_seconds: float = 10.0, env: dict[str, str] | None = None) -> int:
  """Runs the commands at once; returns 0 when all succeed. When one fails (or on Ctrl-C or
  SIGTERM to the launcher) the others get SIGTERM, then SIGKILL after `grace_seconds`, and LaunchError names the first that
  failed."""
  procs = [subprocess.Popen(list(c), env=env) for c in commands]
  stop = lambda *_: (_ for _ in ()).throw(KeyboardInterrupt())  # SIGTERM: as Ctrl-C
  previous = signal.signal(signal.SIGTERM, stop)
  try:
    while True:
      codes = [p.poll() for p in procs]
      failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        i, code = failed[0]
        _stop(procs, grace_seconds)
        why = (f"killed by signal {signal.Signals(-code).name}" if code < 0
               else f"exited with status {code}")
        raise LaunchError(f"process {i} of {len(procs)} {why}; stopped the other processes "
                          "(its own output above says why)")
      if all(c == 0 for c in codes):
        return 0
      time.sleep(poll_seconds)
  except KeyboardInterrupt:
    _stop(procs, grace_seconds)
    raise
  finally:
    signal.signal(signal.SIGTERM, previous)


def _stop(procs, grace_seconds: float) -> None:
  for p in procs:
    if p.poll() is None:
      p.terminate()
  deadline = time.time() + grace_seconds
  for p in procs:
    try:
      p.wait(timeout=max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()


def main(num_processes: int, run_args: Sequence[str], port: int | None = None) -> int:
  if num_processes < 1:
    raise LaunchError(f"--local must be >= 1, got {num_processes}")
  return supervise(local_commands(num_processes, run_args, port or free_port()))
