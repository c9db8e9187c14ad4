"""Keyword spotting, 35 classes (the paper's KWS-35), offline: the default corpus's eSpeak
speakers saying all 35 words of Speech Commands v0.02 (the 10 keywords a varying number of times,
each of the 25 other words once), 12 classes -> 35, otherwise the default run.

  fedexit run --config configs/kws35.py --workdir runs/kws35

Real data: configs/paper_kws35.py (Speech Commands v0.02 folder or tfds).
"""
from __future__ import annotations

import os

from fedexit_jax import config_utils


def get_config():
  c = config_utils.load_config(os.path.join(os.path.dirname(__file__), "default.py"))
  c.data.num_classes = 35
  c.data.unknown_per_speaker = 25  # every non-keyword word once per speaker: the 35-word set
  c.data.silence_fraction = 0.0  # no _silence_ class in the 35-word set
  return c
