"""Keyword spotting, 12 classes, offline: exactly the default run (configs/default.py), under the
task's name so that every task has its config file.

  fedexit run --config configs/kws12.py --workdir runs/kws12
"""
from __future__ import annotations

import os

from fedexit_jax import config_utils


def get_config():
  return config_utils.load_config(os.path.join(os.path.dirname(__file__), "default.py"))
