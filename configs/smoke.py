"""A one-minute check that an install runs end to end: the default pipeline (synthetic corpus ->
speaker clients in two tiers -> compiled rounds -> checkpoint, metrics, plots, summary) on a tiny
randomly initialised 4-layer backbone and a tiny corpus, for 1 round. Not for results.

  fedexit run --config configs/smoke.py --workdir runs/smoke
"""
from __future__ import annotations

import os

from fedexit_jax import config_utils


def get_config():
  c = config_utils.load_config(os.path.join(os.path.dirname(__file__), "default.py"))
  c.rounds = 1
  c.eval_every = 1
  c.checkpoint_every = 1
  c.progress_bar = False
  c.batch_size = 8
  c.clients_per_round = 3
  c.data.num_speakers = 12
  c.data.per_word = 1
  c.data.unknown_per_speaker = 2
  c.data.test_fraction = 0.25
  c.data.num_clients = 6
  c.data.clip_seconds = 0.5
  c.model.checkpoint = None
  c.model.exits = (2, 4)
  c.tiers = [dict(fraction=0.5, max_depth=2, speed=1.0), dict(fraction=0.5, max_depth=4, speed=2.0)]
  c.model.overrides = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                           intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=8,
                           num_conv_pos_embedding_groups=2)
  return config_utils.apply_overrides(c, ["cpu_devices=1"])  # typed "auto" | int
