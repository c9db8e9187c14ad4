"""Multi-process runs (jax.distributed over CPU processes, gloo collectives): the same metrics
as one process with the same number of devices, resume, and failures that end the run with an
error instead of a hang."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedexit_jax import checkpoint, config_utils, launch, runtime

SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.py")


def _env():
  """A fresh process: its own CPU device count (no forced count from the test session)."""
  return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def _fedexit(*args, timeout=600):
  return subprocess.run([sys.executable, "-m", "fedexit_jax.cli", *args], env=_env(),
                        capture_output=True, text=True, timeout=timeout)


def _rows(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _assert_rows_close(a, b):
  assert len(a) == len(b)
  for ra, rb in zip(a, b):
    assert ra.keys() == rb.keys()
    for k in ra:
      if isinstance(ra[k], dict):
        assert ra[k].keys() == rb[k].keys()
        for e in ra[k]:
          assert ra[k][e] == pytest.approx(rb[k][e], rel=1e-4, abs=1e-6), (k, e)
      elif isinstance(ra[k], float):
        assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-6), k
      else:
        assert ra[k] == rb[k], k  # rounds, counts: exact


def test_two_processes_write_what_one_process_with_two_devices_writes(tmp_path):
  """The round's client axis over 2 processes x 1 device is the same program as 1 process x 2
  devices: same metrics to float tolerance, also after a resume (the coordinator's port changes
  between the launches: `distributed` may change on resume)."""
  mp, sp = tmp_path / "two_processes", tmp_path / "one_process"
  run = ["run", "--config", SMOKE, "--config.rounds=1"]
  out = _fedexit("launch", "--local", "2", "--", *run, "--workdir", str(mp),
                 "--config.cpu_devices=1")
  assert out.returncode == 0, out.stderr[-3000:]
  out = _fedexit(*run, "--workdir", str(sp), "--config.cpu_devices=2")
  assert out.returncode == 0, out.stderr[-3000:]
  info = json.loads((mp / "run_info.json").read_text())
  assert len(info["devices"]) == 2 and info["cpu_devices"] == 1  # both processes' devices
  assert (mp / "summary.md").is_file() and (mp / "checkpoints" / "1").is_dir()
  _assert_rows_close(_rows(mp), _rows(sp))

  resume = ["run", "--config", SMOKE, "--config.rounds=2", "--resume"]
  out = _fedexit("launch", "--local", "2", "--", *resume, "--workdir", str(mp),
                 "--config.cpu_devices=1")
  assert out.returncode == 0, out.stderr[-3000:]
  out = _fedexit(*resume, "--workdir", str(sp), "--config.cpu_devices=2")
  assert out.returncode == 0, out.stderr[-3000:]
  rows = _rows(mp)
  assert [r["round"] for r in rows] == [1, 2]
  _assert_rows_close(rows, _rows(sp))


def test_a_process_killed_mid_run_stops_the_launch_and_the_resumed_run_matches(tmp_path):
  """Process 1 is SIGKILLed during the rounds: the launcher stops process 0 and fails naming
  process 1 (not a hang); `--resume` then finishes the run, and its metrics.jsonl equals an
  uninterrupted one-process run's (float tolerance)."""
  workdir = tmp_path / "w"
  run = ["run", "--config", SMOKE, "--config.rounds=30", "--config.eval_every=10",
         "--config.checkpoint_every=1"]
  cmd = [sys.executable, "-m", "fedexit_jax.cli", "launch", "--local", "2", "--", *run,
         "--workdir", str(workdir), "--config.cpu_devices=1"]
  proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  try:
    deadline = time.time() + 300
    while len(checkpoint.all_steps(workdir)) < 2:  # two rounds saved, the run goes on
      assert proc.poll() is None, proc.communicate()[1][-3000:]
      assert time.time() < deadline, "the run did not start"
      time.sleep(0.2)
    pids = subprocess.run(["pgrep", "-f", f"{workdir} .*process_id=1"], capture_output=True,
                          text=True).stdout.split()
    assert len(pids) == 1, pids
    os.kill(int(pids[0]), signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 2
  assert "process 1 of 2 killed by signal SIGKILL; stopped the other processes" in err
  assert not subprocess.run(["pgrep", "-f", f"{workdir} "], capture_output=True).stdout
  stopped_at = checkpoint.latest_step(workdir)
  assert stopped_at is not None and stopped_at < 30
  out = _fedexit("launch", "--local", "2", "--", *run, "--workdir", str(workdir),
                 "--config.cpu_devices=1", "--resume")
  assert out.returncode == 0, out.stderr[-3000:]
  ref = tmp_path / "ref"
  out = _fedexit(*run, "--workdir", str(ref), "--config.cpu_devices=2")
  assert out.returncode == 0, out.stderr[-3000:]
  rows = _rows(workdir)
  assert [r["round"] for r in rows] == list(range(1, 31))
  _assert_rows_close(rows, _rows(ref))


def test_without_the_launcher_a_dead_peer_ends_the_run_with_an_error(tmp_path):
  """Processes started one by one (as srun or mpirun start them): process 1 is SIGKILLed during
  the rounds; process 0 stops with an error that says to resume (its failed collective, or JAX's
  heartbeat timeout for a peer that stops answering), not a hang."""
  workdir = tmp_path / "w"
  base = [sys.executable, "-m", "fedexit_jax.cli", "run", "--config", SMOKE, "--workdir",
          str(workdir), "--config.rounds=100000", "--config.eval_every=100000",
          "--config.checkpoint_every=100000", "--config.cpu_devices=1",
          f"--config.distributed.coordinator=127.0.0.1:{launch.free_port()}",
          "--config.distributed.num_processes=2", "--config.distributed.heartbeat_timeout=30"]
  procs = [subprocess.Popen(base + [f"--config.distributed.process_id={i}"], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  try:
    deadline = time.time() + 300
    while not (workdir / "metrics.jsonl").exists():
      assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-3000:]
      assert time.time() < deadline, "the run did not start"
      time.sleep(0.5)
    time.sleep(1)
    procs[1].kill()
    _, err = procs[0].communicate(timeout=120)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert procs[0].returncode != 0
  # ours, from the failed collective; or JAX's own, when its coordination service notices the
  # dead peer first (the process is then aborted before Python sees an error)
  assert ("lost another process of the run" in err and "--resume" in err) or (
      "detected fatal errors" in err and "another task died" in err), err[-3000:]


def test_supervise_stops_the_others_when_one_fails():
  sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
  failing = [sys.executable, "-c", "import sys; sys.exit(3)"]
  t0 = time.time()
  with pytest.raises(launch.LaunchError, match="process 1 of 2 exited with status 3"):
    launch.supervise([sleeper, failing])
  assert time.time() - t0 < 60  # the sleeper was stopped, not waited for
  assert launch.supervise([[sys.executable, "-c", "pass"]] * 2) == 0


def test_sigterm_to_the_launcher_stops_its_processes(tmp_path):
  marker = f"sleep_{tmp_path.name}"
  code = ("import sys; from fedexit_jax import launch; "  # the marker only in the children
          f"launch.supervise([[sys.executable, '-c', 'import time; time.sleep(120)', "
          f"'sl' + '{marker[2:]}']] * 2)")
  proc = subprocess.Popen([sys.executable, "-c", code], env=_env(), stderr=subprocess.PIPE,
                          text=True)
  deadline = time.time() + 60
  while len(subprocess.run(["pgrep", "-f", marker], capture_output=True,
                           text=True).stdout.split()) < 2:
    assert time.time() < deadline and proc.poll() is None
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=60)
  assert proc.returncode != 0
  assert not subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout


def test_local_commands():
  cmds = launch.local_commands(2, ["run", "--workdir", "w"], port=1234)
  assert len(cmds) == 2
  for i, c in enumerate(cmds):
    assert c[1:5] == ["-m", "fedexit_jax.cli", "run", "--workdir"]
    assert "--config.distributed.coordinator=127.0.0.1:1234" in c
    assert "--config.distributed.num_processes=2" in c
    assert f"--config.distributed.process_id={i}" in c
    assert f"--config.cpu_devices={max(1, runtime.available_cores() // 2)}" in c
  kept = launch.local_commands(2, ["run", "--config.cpu_devices=3"], port=1)[0]
  assert sum(a.startswith("--config.cpu_devices") for a in kept) == 1
  with pytest.raises(launch.LaunchError, match="runs `run"):
    launch.local_commands(2, ["probe"], port=1)


def test_launch_needs_the_run_after_double_dash(capsys):
  from fedexit_jax import cli
  assert cli.main(["launch", "--local", "2", "--", "probe"]) == 2
  assert "fedexit launch runs `run" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main(["launch", "--local", "2"])


@pytest.mark.parametrize("override,match", [
    ("distributed.process_id=2", "process_id"),
    ("distributed.coordinator=localhost", "host:port"),
    ("distributed.initialization_timeout=0", "timeouts"),
])
def test_bad_distributed_config(override, match):
  config = config_utils.apply_overrides(
      config_utils.default_config(),
      ["distributed.coordinator=127.0.0.1:1", "distributed.num_processes=2", override])
  with pytest.raises(config_utils.ConfigError, match=match):
    config_utils.validate_config(config)


def test_cluster_detection(monkeypatch):
  for var in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
              "SLURM_LOCALID", "OMPI_MCA_orte_hnp_uri"):
    monkeypatch.delenv(var, raising=False)
  assert runtime.detected_cluster() is None
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node1", "SLURM_NTASKS": "2",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
  for k, v in slurm.items():
    monkeypatch.setenv(k, v)
  assert runtime.detected_cluster() == "SlurmCluster"
  monkeypatch.setenv("SLURM_NTASKS", "1")  # a one-task job is no multi-process run
  assert runtime.detected_cluster() is None


def test_one_process_run_does_not_join(monkeypatch):
  monkeypatch.delenv("SLURM_JOB_ID", raising=False)
  monkeypatch.delenv("OMPI_MCA_orte_hnp_uri", raising=False)
  assert runtime.use_distributed(config_utils.default_config().distributed) == (0, 1)
