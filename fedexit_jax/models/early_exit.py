"""Early-exit logits: one forward pass to a static depth yields the logits of every exit at or
below it (exit e reads the output of transformer layer e)."""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from fedexit_jax.models import heads, wav2vec2
from fedexit_jax.models.config import EncoderConfig


def active_exits(config: EncoderConfig, exits: Sequence[int], depth: int) -> tuple[int, ...]:
  """The exits a depth-`depth` forward pass reaches; validates exits and depth."""
  exits = tuple(int(e) for e in exits)
  L = config.num_hidden_layers
  if not exits or list(exits) != sorted(set(exits)) or exits[0] < 1 or exits[-1] > L:
    raise ValueError(f"exits must be strictly increasing layer numbers in [1, {L}], got {exits}")
  if not isinstance(depth, (int, np.integer)) or not 1 <= depth <= L:
    raise ValueError(f"depth must be an int in [1, {L}], got {depth!r}")
  active = tuple(e for e in exits if e <= depth)
  if not active:
    raise ValueError(f"depth {depth} is below the first exit {exits[0]}: no exit would be computed")
  return active


def exit_logits(config: EncoderConfig, backbone_params: dict, head_params: dict,
                features: jax.Array, frame_mask: jax.Array | None, exits: Sequence[int],
                depth: int) -> jax.Array:
  """features [B, T, C] (conv features from wav2vec2.extract_features) -> logits [n, B, classes]
  for the n exits <= depth. exits and depth are static; head_params rows beyond n are unused, so
  a tree sliced to its first n rows works too."""
  active = active_exits(config, exits, depth)
  hidden = wav2vec2.encode_features(config, backbone_params, features, frame_mask, depth)
  selected = hidden[np.asarray(active) - 1]  # static indices: [n, B, T, H]
  return heads.apply_exit_heads(head_params, heads.stats_pool(selected, frame_mask))
