"""The paper's keyword-spotting setting: HuBERT Base, Speech Commands v0.02, 12 classes.

Exits after layers 3/6/9/12, half the clients capped at layer 3 and half at layer 6 (the best
KWS layer in the paper), speaker partition, 1000 rounds, layer-wise aggregation (Eq. 1). Needs a
GPU for a reasonable run time and the data on disk:

  fedexit run --config configs/paper_kws12.py --workdir runs/kws12 \\
      --config.data.dir=/data/speech_commands_v0.02 \\
      --config.model.checkpoint=facebook/hubert-base-ls960

`data.dir` is the extracted Speech Commands v0.02 folder (word/<speaker>_nohash_<n>.wav,
validation_list.txt, testing_list.txt, _background_noise_), or with `data.source=tfds` the tfds
data_dir. `model.checkpoint` is a folder made by `fedexit convert`, a PyTorch/HF checkpoint path,
or a Hub id already in the local Hugging Face cache (use wav2vec2 Base, facebook/wav2vec2-base,
for the paper's other backbone). The paper does not give the number of clients, optimiser, learning
rate or batch size; the values below are ours.
"""
from __future__ import annotations

import os

from fedexit_jax import config_utils


def get_config(arg: str | None = None):
  """`arg` is the number of classes, "12" (default) or "35": `--config configs/paper_kws12.py:35`."""
  num_classes = int(arg) if arg else 12
  # Start from the default: its keys are the schema.
  c = config_utils.load_config(os.path.join(os.path.dirname(__file__), "default.py"))
  c.rounds = 1000
  c.eval_every = 10
  c.eval_batch_size = 64
  c.checkpoint_every = 50
  c.max_checkpoints = 3

  c.data.source = "folder"
  c.data.dir = None  # must be set: --config.data.dir=/path/to/speech_commands_v0.02
  c.data.num_classes = num_classes
  c.data.clip_seconds = 1.0
  c.data.partition = "speaker"
  c.data.num_clients = 1000  # the ~2,100 training speakers grouped into clients

  c.model.preset = "base"
  c.model.checkpoint = "facebook/hubert-base-ls960"
  c.model.exits = (3, 6, 9, 12)
  c.model.freeze_feature_encoder = True

  c.tiers = [
      dict(fraction=0.5, max_depth=3, speed=1.0),
      dict(fraction=0.5, max_depth=6, speed=2.0),
  ]
  c.clients_per_round = 50
  c.local_epochs = 1
  c.batch_size = 32
  c.client_optimizer.name = "adam"
  c.client_optimizer.learning_rate = 5e-5
  c.server_optimizer.name = "fedavg"
  c.server_optimizer.learning_rate = 1.0
  c.weighting = "paper"
  c.loss = "deepest"
  c.chunk_size = "auto"
  return c
