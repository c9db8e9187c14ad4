"""The wav2vec 2.0 / HuBERT early-exit model as the federated engine sees it: the glue between
fedexit_jax.models (below) and fedexit_jax.federated (beside it), which know nothing of each other.

The engine trains the tree of models.trainable.split_params, {"backbone": ..., "heads": ...}. The
Transformer layers (backbone.encoder.layers, stacked [L, ...]) are the "layer" leaves, the heads
the "exit" leaves, the rest is shared by every client.
"""
from __future__ import annotations

import dataclasses

from fedexit_jax.federated.model import EarlyExitModel
from fedexit_jax.models import early_exit, heads, wav2vec2
from fedexit_jax.models.config import EncoderConfig


@dataclasses.dataclass(frozen=True)
class SpeechExitModel(EarlyExitModel):
  """config: the encoder; exits: 1-based layers with an exit head.

  train_feature_encoder=False (default): a client's `inputs` are cached conv features [N, T, C]
  and `input_mask` frame masks [N, T]. True: `inputs` are waveforms [N, S], `input_mask` sample
  masks [N, S], and the conv feature encoder is part of the trainable tree (split_params with
  train_feature_encoder=True).

  head: "pooled" (utterance classification; outputs logits [n, B, C], for objective.CrossEntropy)
  or "frames" (outputs (frame logits [n, B, T, V], frame mask [B, T]), for objective.CTC)."""
  config: EncoderConfig
  exits: tuple[int, ...]
  train_feature_encoder: bool = False
  head: str = "pooled"
  mask_group_norm: bool = False  # utterances of different lengths: modules.FeatureEncoder
  layer_path = ("backbone", "encoder", "layers")
  exit_path = ("heads",)

  def __post_init__(self):
    object.__setattr__(self, "exits", tuple(int(e) for e in self.exits))
    if self.head not in heads.HEAD_KINDS:
      raise ValueError(f"unknown head {self.head!r}; choose one of {heads.HEAD_KINDS}")
    self.validate()

  @property
  def num_layers(self) -> int:
    return self.config.num_hidden_layers

  @property
  def width(self) -> int:
    return self.config.hidden_size

  def logits(self, params, inputs, input_mask, depth, heads_at):
    if self.train_feature_encoder:
      feats, fmask = wav2vec2.extract_features(self.config, params["backbone"], inputs, input_mask,
                                               self.mask_group_norm)
    else:
      feats, fmask = inputs, input_mask
    logits = early_exit.exit_logits(self.config, params["backbone"], params["heads"], feats,
                                    fmask, self.exits, depth, heads_at=heads_at, head=self.head)
    return logits if self.head == "pooled" else (logits, fmask)
