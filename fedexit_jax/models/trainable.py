"""The trainable tree the federated engine trains for the speech model: {"backbone", "heads"}.

"backbone" is the encoder's tree (wav2vec2.py) without the frozen conv feature extractor, whose
features are computed once and cached (feature_cache.py); "heads" are the exit heads stacked
[E, ...].
"""
from __future__ import annotations

from typing import Any


def split_params(model_params: dict, head_params: dict,
                 train_feature_encoder: bool = False) -> tuple[dict, dict]:
  """(trainable, frozen) from `wav2vec2.init_params` (or a converted checkpoint) and
  `heads.init_exit_heads`.

  With the feature encoder frozen (default) it goes to `frozen` and is used once, to cache conv
  features; it is never copied per client. Unfrozen, it is part of the trainable tree.
  """
  backbone = {k: v for k, v in model_params.items() if k != "feature_extractor"}
  fe = model_params.get("feature_extractor")
  frozen: dict[str, Any] = {}
  if fe is not None:
    if train_feature_encoder:
      backbone["feature_extractor"] = fe
    else:
      frozen["feature_extractor"] = fe
  elif train_feature_encoder:
    raise ValueError("train_feature_encoder=True but model_params has no 'feature_extractor'")
  return {"backbone": backbone, "heads": head_params}, frozen
