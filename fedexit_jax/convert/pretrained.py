"""Pretrained backbones by name or path, as parameter dicts or as a ready Flax module.

    model = load_early_exit("builtin:small_ssl", exits=(3, 6, 9, 12), num_classes=12)
    logits = nnx.jit(lambda m, w: m(w, depth=6))(model, waveform)  # [2, B, 12]

Every form a run's `model.checkpoint` accepts: "builtin:<name>" (shipped in the package, listed in
BUILTIN), a folder written by `fedexit convert` / `fedexit pretrain` (orbax), a PyTorch / Hugging
Face checkpoint (file or folder; needs the `convert` extra) or a Hub id already in the local cache.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import jax
from flax import nnx

from fedexit_jax.convert.pytorch import load_pytorch_checkpoint
from fedexit_jax.convert.saved import load_converted
from fedexit_jax.models import modules
from fedexit_jax.models.config import EncoderConfig

BUILTIN_PREFIX = "builtin:"
_ASSETS = Path(__file__).resolve().parents[1] / "assets"
# The default backbone is the "exits" recipe's: at this scale (1,500 steps on 2,669 clips) the
# HuBERT-faithful recipe gives a much weaker backbone (linear probe 69% vs 84%, default run 42.6%
# vs 20.1% error at exit 3 on the earlier corpus; README "Self-supervised backbones"), so it
# ships beside it.
BUILTIN = {"small_ssl": _ASSETS / "small_ssl",  # the default: recipe "exits"
           "small_ssl_exits": _ASSETS / "small_ssl",  # the same checkpoint, named by its recipe
           "small_ssl_hubert": _ASSETS / "small_ssl_hubert",  # recipe "hubert"
           # recipe "exits" on sentences (`--layout librispeech`): ASR's default backbone
           "small_ssl_sentences": _ASSETS / "small_ssl_sentences"}



def resolve_builtin(name: str) -> Path:
  """'builtin:small_ssl' -> the checkpoint folder shipped in the package."""
  key = name[len(BUILTIN_PREFIX):]
  if key not in BUILTIN:
    raise ValueError(f"unknown built-in checkpoint {name!r}; choose one of "
                     f"{[BUILTIN_PREFIX + k for k in BUILTIN]}")
  path = BUILTIN[key]
  if not (path / "params").is_dir():
    raise FileNotFoundError(f"built-in checkpoint {name!r} is missing from {path}; reinstall the "
                            "package or remake it with `fedexit pretrain`")
  return path



def load_backbone(checkpoint: str | os.PathLike) -> tuple[EncoderConfig, dict[str, Any]]:
  """(encoder config, backbone params) of a checkpoint in any accepted form."""
  ckpt = checkpoint
  if str(ckpt).startswith(BUILTIN_PREFIX):
    ckpt = resolve_builtin(str(ckpt))
  if (Path(ckpt) / "params").is_dir():  # a folder written by `fedexit convert` / `pretrain`
    return load_converted(ckpt)
  return load_pytorch_checkpoint(ckpt)


def load_early_exit(checkpoint: str | os.PathLike, exits: Sequence[int], num_classes: int, *,
                    head: str = "pooled", frame_kernel: int = 3,
                    seed: int = 0) -> modules.SpeechEarlyExit:
  """modules.SpeechEarlyExit with the checkpoint's backbone and freshly initialised exit heads
  (head "pooled" for classification, "frames" for CTC with num_classes the vocabulary and
  frame_kernel temporal-conv taps)."""
  config, params = load_backbone(checkpoint)
  abstract = nnx.eval_shape(lambda: modules.SpeechEarlyExit(
      config, exits, num_classes, head=head, frame_kernel=frame_kernel, rngs=nnx.Rngs(0)))
  head_params = nnx.to_pure_dict(nnx.state(modules.init_fast(
      lambda rngs: modules.make_heads(head, config.hidden_size, num_classes, len(tuple(exits)),
                                      frame_kernel=frame_kernel, rngs=rngs),
      jax.random.key(seed))))
  return nnx.merge(nnx.graphdef(abstract), {"backbone": params, "heads": head_params})
