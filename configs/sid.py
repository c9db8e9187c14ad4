"""Speaker identification and verification (the paper's VoxCeleb1 rows), offline by default: an
eSpeak corpus in the VoxCeleb1 layout (40 identification speakers of 20 short phrases, each
speaker's clips split IID into client data and test, plus 20 further speakers for the EER
trials). Clients: an IID split of the training clips (the paper's VoxCeleb1 protocol); tiers at
layers 3 and 9 (the paper's best speaker-id layer).

  fedexit run --config configs/sid.py --workdir runs/sid
  # VoxCeleb1: --config.data.source=folder --config.data.dir=/data/voxceleb1 (wav/, iden_split.txt,
  #            veri_test2.txt) --config.model.checkpoint=facebook/hubert-base-ls960 ...

metrics.jsonl: "error" (identification) and "eer" (verification) per exit.
"""
from __future__ import annotations

import os

from fedexit_jax import config_utils


def get_config():
  c = config_utils.load_config(os.path.join(os.path.dirname(__file__), "default.py"))
  c.task = "sid"
  c.rounds = 20
  c.eval_every = 5
  c.data.num_speakers = 40
  c.data.per_speaker = 20
  c.data.test_fraction = 0.2  # of each speaker's clips (iden_split 3)
  c.data.verify_speakers = 20
  c.data.num_trials = 4000
  c.data.snr_db = (5.0, 25.0)
  c.data.max_seconds = 2.0  # clips are 1.5-3 s (mean 1.8 s)
  c.data.partition = "iid"
  c.data.num_clients = 20
  c.model.exits = (3, 6, 9, 12)
  c.tiers = [dict(fraction=0.5, max_depth=3, speed=1.0), dict(fraction=0.5, max_depth=9, speed=3.0)]
  c.clients_per_round = 5
  c.local_epochs = 4
  c.batch_size = 16
  return c
