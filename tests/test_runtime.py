"""CPU device setup ('auto' means one device per usable core, applied only before JAX starts) and
the persistent compilation cache (a second process loads the first one's programs)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from fedexit_jax import config_utils, runtime


def test_resolve_cpu_devices():
  assert runtime.resolve_cpu_devices("auto") == runtime.available_cores() >= 1
  assert runtime.resolve_cpu_devices(3) == 3
  for bad in (0, -1, "two", True, 1.5):
    with pytest.raises(ValueError, match="cpu_devices"):
      runtime.resolve_cpu_devices(bad)


def test_bad_cpu_devices_is_a_config_error():
  for bad in ("0", "many"):
    config = config_utils.apply_overrides(config_utils.default_config(), [f"cpu_devices={bad}"])
    with pytest.raises(config_utils.ConfigError, match="cpu_devices"):
      config_utils.validate_config(config)
  config = config_utils.apply_overrides(config_utils.default_config(), ["cpu_devices=3"])
  assert config.cpu_devices == 3
  config_utils.validate_config(config)


def test_a_fresh_process_gets_the_requested_devices():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  code = ("from fedexit_jax import runtime; import jax; "
          "print(runtime.use_cpu_devices(3), len(jax.devices('cpu')))")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True).stdout.split()
  assert out == ["3", "3"]


def test_a_running_jax_keeps_its_devices_and_says_so(caplog):
  jax.numpy.zeros(1).block_until_ready()  # JAX has started in this process
  have = len(jax.devices("cpu"))
  with caplog.at_level(logging.WARNING, logger="fedexit_jax.runtime"):
    assert runtime.use_cpu_devices(have + 1) == have
  assert f"keeping {have}" in caplog.text
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="fedexit_jax.runtime"):
    assert runtime.use_cpu_devices(have) == have
  assert not caplog.text


def test_resolve_compilation_cache(tmp_path, monkeypatch):
  monkeypatch.delenv(runtime.CACHE_ENV, raising=False)
  monkeypatch.setenv("FEDEXIT_CACHE", str(tmp_path / "root"))
  assert runtime.resolve_compilation_cache("auto") == tmp_path / "root" / "xla"
  assert runtime.resolve_compilation_cache(None) is None
  assert runtime.resolve_compilation_cache(str(tmp_path / "c")) == tmp_path / "c"
  assert runtime.resolve_compilation_cache("~/c") == Path.home() / "c"
  monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "moved"))
  assert runtime.resolve_compilation_cache("auto") == tmp_path / "moved"
  assert runtime.resolve_compilation_cache(str(tmp_path / "c")) == tmp_path / "c"  # explicit wins
  for off in ("off", "None", "0", "false"):
    monkeypatch.setenv(runtime.CACHE_ENV, off)
    assert runtime.resolve_compilation_cache("auto") is None
  for bad in (1, True, ""):
    with pytest.raises(ValueError, match="compilation_cache"):
      runtime.resolve_compilation_cache(bad)


def test_compilation_cache_config_key():
  config = config_utils.apply_overrides(config_utils.default_config(), ["compilation_cache=None"])
  assert config.compilation_cache is None
  config_utils.validate_config(config)
  config = config_utils.apply_overrides(config_utils.default_config(), ["compilation_cache=/x/y"])
  assert config.compilation_cache == "/x/y"
  config_utils.validate_config(config)
  config = config_utils.default_config()
  assert config.compilation_cache == "auto"
  with config.unlocked():
    del config["compilation_cache"]
    config.compilation_cache = 3
  with pytest.raises(config_utils.ConfigError, match="compilation_cache"):
    config_utils.validate_config(config)


# Compiles f at two shapes in a fresh process with the cache set to argv[1] (JSON) and prints what
# JAX's monitoring events say happened. MIN_COMPILE_SECONDS is lowered so that these millisecond
# compiles are written too (whether a program is slow enough to be written depends on the
# machine); the inputs are numpy arrays so that f is all that compiles.
_PROBE = textwrap.dedent("""
  import json, sys
  import jax, jax.numpy as jnp, numpy as np
  from fedexit_jax import runtime
  runtime.MIN_COMPILE_SECONDS = 0.0
  events = []
  jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
  for value in json.loads(sys.argv[1]):
    folder = runtime.use_compilation_cache(value)
    traces = []
    @jax.jit
    def f(x):
      traces.append(x.shape)
      return jnp.tanh(x) * 3.0 + 1.0
    out = [float(np.asarray(f(np.ones((2, n), np.float32))).sum()) for n in (5, 7)]
    out += [float(np.asarray(f(np.ones((2, 5), np.float32))).sum())]
    print(json.dumps({
        "folder": folder and str(folder), "out": out, "traces": len(traces),
        "programs": f._cache_size(),
        "hits": events.count("/jax/compilation_cache/cache_hits"),
        "writes": events.count("/jax/compilation_cache/cache_misses")}))
    events.clear()
""")


def _run_probe(values, cpu_devices=1, stderr=None, **env_extra):
  """The probe's report per value of `values` (compilation_cache values applied in turn); its
  stderr is appended to the list `stderr` if given."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", runtime.CACHE_ENV, "JAX_COMPILATION_CACHE_DIR")}
  env.update(env_extra)
  code = f"import jax; jax.config.update('jax_num_cpu_devices', {cpu_devices})\n" + _PROBE
  proc = subprocess.run([sys.executable, "-c", code, json.dumps(values)], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  if stderr is not None:
    stderr.append(proc.stderr)
  return [json.loads(line) for line in proc.stdout.splitlines()]


def _entries(folder: Path) -> list[str]:
  return sorted(p.name for p in folder.glob("jit_f-*-cache")) if folder.exists() else []


@pytest.mark.parametrize("cpu_devices", [1, 2])
def test_a_second_process_loads_the_first_ones_programs(tmp_path, cpu_devices):
  folder = tmp_path / "xla"
  (first,) = _run_probe([str(folder)], cpu_devices=cpu_devices)
  assert first["folder"] == str(folder)
  assert (first["hits"], first["writes"], first["traces"], first["programs"]) == (0, 2, 2, 2)
  assert len(_entries(folder)) == 2  # one per shape
  (second,) = _run_probe([str(folder)], cpu_devices=cpu_devices)
  assert (second["hits"], second["writes"]) == (2, 0)
  np.testing.assert_allclose(second["out"], first["out"], rtol=1e-6)
  assert len(_entries(folder)) == 2
  # Loading from disk still traces and still adds one program per new shape, so the tests that
  # count traces (chex.assert_max_traces) or programs (`_cache_size`) still see a recompile.
  assert (second["traces"], second["programs"]) == (2, 2)


def test_the_environment_variable_moves_or_disables_the_cache(tmp_path):
  moved = tmp_path / "moved"
  root = tmp_path / "root"
  (first,) = _run_probe(["auto"], FEDEXIT_CACHE=str(root), FEDEXIT_COMPILATION_CACHE=str(moved))
  assert first["folder"] == str(moved) and first["writes"] == 2
  assert len(_entries(moved)) == 2 and not root.exists()
  (off,) = _run_probe(["auto"], FEDEXIT_CACHE=str(root), FEDEXIT_COMPILATION_CACHE="off",
                      JAX_COMPILATION_CACHE_DIR=str(moved))  # off wins over JAX's own setting
  assert off["folder"] is None and (off["hits"], off["writes"]) == (0, 0)
  (auto,) = _run_probe(["auto"], FEDEXIT_CACHE=str(root))
  assert auto["folder"] == str(root / "xla") and len(_entries(root / "xla")) == 2


def test_a_cut_short_entry_is_recompiled_not_run(tmp_path):
  """A run killed while writing an entry leaves it truncated: JAX warns and compiles instead (and
  keeps the bad file, README says so)."""
  folder = tmp_path / "xla"
  (first,) = _run_probe([str(folder)])
  for name in _entries(folder):
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[:len(data) // 2])
  stderr = []
  (second,) = _run_probe([str(folder)], stderr=stderr)
  assert second["hits"] == 0 and "Error reading persistent compilation cache entry" in stderr[0]
  np.testing.assert_allclose(second["out"], first["out"], rtol=1e-6)


def test_switching_folders_or_off_in_a_running_process(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  reports = _run_probe([str(a), str(b), None, str(a)])
  assert [r["folder"] for r in reports] == [str(a), str(b), None, str(a)]
  assert [(r["hits"], r["writes"]) for r in reports] == [(0, 2), (0, 2), (0, 0), (2, 0)]
  assert len(_entries(a)) == 2 and len(_entries(b)) == 2


def test_round_programs_pass_the_write_thresholds(tmp_path):
  code = ("from fedexit_jax import runtime; import jax; "
          f"runtime.use_compilation_cache({str(tmp_path)!r}); "
          "print(jax.config.jax_persistent_cache_min_compile_time_secs, "
          "jax.config.jax_persistent_cache_min_entry_size_bytes)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True).stdout.split()
  # JAX's defaults write only programs that took >= 1 s; ours also keep the sub-second ones
  # (evaluation, feature and aggregation programs of a small model) and have no size floor.
  assert float(out[0]) == runtime.MIN_COMPILE_SECONDS < 1.0 and int(out[1]) == -1


def test_mapped_regions_reads_proc(tmp_path):
  (tmp_path / "maps").write_text("a\nb\nc\n")
  (tmp_path / "cap").write_text("10\n")
  assert runtime.mapped_regions(tmp_path / "maps", tmp_path / "cap") == (3, 10)
  assert runtime.mapped_regions(tmp_path / "none", tmp_path / "cap") is None


def test_crowded_process_releases_compiled_programs():
  """Past the share of vm.max_map_count, JAX's compiled programs are dropped and their code
  unmapped (XLA:CPU: a few regions per program); under it nothing is touched."""
  if runtime.mapped_regions() is None:
    pytest.skip("no /proc on this platform")
  fns = [jax.jit(lambda x, k=k: x * 2.0 + k) for k in range(40)]
  for k, f in enumerate(fns):
    np.testing.assert_allclose(f(np.ones(3, np.float32)), 2.0 + k)
  assert all(f._cache_size() == 1 for f in fns)
  assert not runtime.release_programs_if_crowded(1.0)  # no process maps more than the cap
  assert all(f._cache_size() == 1 for f in fns)
  before = runtime.mapped_regions()[0]
  assert runtime.release_programs_if_crowded(0.0)
  assert all(f._cache_size() == 0 for f in fns)
  assert runtime.mapped_regions()[0] <= before - 40  # at least one region per program let go
  np.testing.assert_allclose(fns[3](np.ones(3, np.float32)), 5.0)  # traced again when called
