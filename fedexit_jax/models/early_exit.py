"""Early-exit logits as a function of plain parameter dicts: one forward pass to a static depth
yields the logits of every exit at or below it (exit e reads the output of transformer layer e).
The module form is modules.SpeechEarlyExit."""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from fedexit_jax.models import heads, wav2vec2
from fedexit_jax.models.config import EncoderConfig
from fedexit_jax.models.modules import active_exits


def exit_logits(config: EncoderConfig, backbone_params: dict, head_params: dict,
                features: jax.Array, frame_mask: jax.Array | None, exits: Sequence[int],
                depth: int, heads_at: Sequence[int] | None = None, head: str = "pooled"
                ) -> jax.Array:
  """features [B, T, C] (conv features from wav2vec2.extract_features) -> logits [n, B, classes]
  (head "pooled") or frame logits [n, B, T, vocab] (head "frames"; heads.HEAD_KINDS).

  heads_at: the exit layers to compute (each one of `exits` and <= depth); default every exit <=
  depth. Only these heads are pooled and applied, so a loss that reads one exit costs one head.
  head_params: one stacked row per computed exit, in order. When heads_at is every exit <= depth
  (the default) a longer stack (the full [E, ...] heads) is accepted and its rows beyond n are
  unused; for any other heads_at the stack must have exactly n rows (a silent wrong head is worse
  than an error).
  exits, depth and heads_at are static.
  """
  active = active_exits(config, exits, depth)
  if heads_at is None:
    heads_at = active
  else:
    heads_at = tuple(int(e) for e in heads_at)
    if not heads_at or any(e not in active for e in heads_at):
      raise ValueError(f"heads_at {heads_at} must be exits reached at depth {depth}: {active}")
    rows = jax.tree.leaves(head_params)[0].shape[0]
    if rows != len(heads_at) and not (heads_at == active and rows > len(heads_at)):
      raise ValueError(f"head_params have {rows} stacked rows for the {len(heads_at)} exits "
                       f"heads_at={heads_at}")
  hidden = wav2vec2.encode_features(config, backbone_params, features, frame_mask,
                                    max(heads_at))
  selected = hidden[np.asarray(heads_at) - 1]  # static indices: [n, B, T, H]
  return heads.apply_heads(head, head_params, selected, frame_mask)
