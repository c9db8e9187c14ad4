"""Emotion recognition, 4 classes (the paper's IEMOCAP row), offline by default: a STAND-IN
corpus in the IEMOCAP layout, eSpeak speakers (5 sessions of one female and one male speaker)
whose "emotions" are prosodic styles (pitch level and range, rate, loudness, spectral tilt) with
overlapping spreads; it exercises the task, it does not measure emotion recognition. Partition by
speaker (one client per speaker), session 5 held out as the test set; tiers at layers 3 and 9.

  fedexit run --config configs/er.py --workdir runs/er
  # IEMOCAP: --config.data.source=folder --config.data.dir=/data/IEMOCAP_full_release ...
"""
from __future__ import annotations

import os

from fedexit_jax import config_utils


def get_config():
  c = config_utils.load_config(os.path.join(os.path.dirname(__file__), "default.py"))
  c.task = "er"
  c.rounds = 30
  c.eval_every = 5
  c.data.num_sessions = 5
  c.data.per_speaker = 100
  c.data.test_session = 5
  c.data.max_seconds = 4.0
  c.data.partition = "per_speaker"
  c.model.exits = (3, 6, 9, 12)
  c.tiers = [dict(fraction=0.5, max_depth=3, speed=1.0), dict(fraction=0.5, max_depth=9, speed=3.0)]
  c.clients_per_round = 4
  c.local_epochs = 1
  c.local_steps = 6  # 96 of a speaker's ~100 utterances per round
  c.batch_size = 16
  return c
