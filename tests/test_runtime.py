"""CPU device setup: 'auto' means one device per usable core, applied only before JAX starts."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import jax
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
