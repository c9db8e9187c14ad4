"""Pretrained backbones by name or path, as parameter dicts or as a ready Flax module.

    model = load_early_exit("builtin:small_ssl", exits=(3, 6, 9, 12), num_classes=12)
    logits = model(waveform, depth=6)  # [2, B, 12]

Every form a run's `model.checkpoint` accepts: "builtin:<name>" (shipped in the package), a
folder written by `fedexit convert` / `fedexit pretrain` (orbax), a PyTorch / Hugging Face
checkpoint (file or folder; needs the `convert` extra) or a Hub id already in the local cache.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import jax
from flax import nnx

from fedexit_jax.models import modules, wav2vec2
from fedexit_jax.models.config import EncoderConfig

BUILTIN_PREFIX = "builtin:"


def load_backbone(checkpoint: str | os.PathLike) -> tuple[EncoderConfig, dict[str, Any]]:
  """(encoder config, backbone params) of a checkpoint in any accepted form."""
  from fedexit_jax import convert, pretrain  # pylint: disable=import-outside-toplevel (cycle)
  ckpt = checkpoint
  if str(ckpt).startswith(BUILTIN_PREFIX):
    ckpt = pretrain.resolve_builtin(str(ckpt))
  if (Path(ckpt) / "params").is_dir():  # a folder written by `fedexit convert` / `pretrain`
    return convert.load_converted(ckpt)
  return convert.load_pytorch_checkpoint(ckpt)


def load_early_exit(checkpoint: str | os.PathLike, exits: Sequence[int], num_classes: int, *,
                    seed: int = 0) -> modules.SpeechEarlyExit:
  """modules.SpeechEarlyExit with the checkpoint's backbone and freshly initialised exit heads."""
  config, params = load_backbone(checkpoint)
  abstract = nnx.eval_shape(lambda: modules.SpeechEarlyExit(config, exits, num_classes,
                                                            rngs=nnx.Rngs(0)))
  head_params = nnx.to_pure_dict(nnx.state(modules.init_fast(
      lambda rngs: modules.ExitHeads(config.hidden_size, num_classes, len(tuple(exits)),
                                     rngs=rngs), jax.random.key(seed))))
  return nnx.merge(nnx.graphdef(abstract), {"backbone": params, "heads": head_params})


def from_params(config: EncoderConfig, params: dict[str, Any]) -> modules.Encoder:
  """modules.Encoder holding a backbone parameter dict (from load_backbone or init_params)."""
  return wav2vec2.bind(modules.Encoder, (config,), params)
