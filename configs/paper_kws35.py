"""The paper's 35-class keyword-spotting setting: as configs/paper_kws12.py with every Speech
Commands v0.02 word a class (no _silence_ / _unknown_ grouping).

  fedexit run --config configs/paper_kws35.py --workdir runs/kws35 \\
      --config.data.dir=/data/speech_commands_v0.02
"""
from __future__ import annotations

import os

from fedexit_jax import config_utils


def get_config():
  return config_utils.load_config(
      os.path.join(os.path.dirname(__file__), "paper_kws12.py") + ":35")
