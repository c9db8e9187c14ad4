"""Encoder configuration: the fields of transformers' HubertConfig/Wav2Vec2Config that shape the
encoder, plus presets.

The config is a frozen (hashable) dataclass so it can be a static argument of jitted functions.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  model_type: str = "hubert"  # "hubert" or "wav2vec2": same encoder, different checkpoint prefixes
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
  conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
  conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
  conv_bias: bool = False
  feat_extract_norm: str = "group"  # "group" (Base) or "layer" (Large / LV-60)
  feat_extract_activation: str = "gelu"
  feat_proj_layer_norm: bool = True  # HuBERT only; wav2vec2 always normalises before projecting
  do_stable_layer_norm: bool = False  # False: post-LN (Base); True: pre-LN (Large / LV-60)
  num_conv_pos_embeddings: int = 128
  num_conv_pos_embedding_groups: int = 16
  layer_norm_eps: float = 1e-5

  def __post_init__(self):
    if self.feat_extract_norm not in ("group", "layer"):
      raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {self.feat_extract_norm!r}")
    if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
      raise ValueError("conv_dim, conv_kernel and conv_stride must have the same length, got "
                       f"{len(self.conv_dim)}, {len(self.conv_kernel)}, {len(self.conv_stride)}")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                       f"num_attention_heads {self.num_attention_heads}")
    if self.hidden_size % self.num_conv_pos_embedding_groups:
      raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                       f"num_conv_pos_embedding_groups {self.num_conv_pos_embedding_groups}")

  @property
  def frame_rate(self) -> float:
    """Frames per second at 16 kHz (50 for the standard conv stack)."""
    hop = 1
    for s in self.conv_stride:
      hop *= s
    return 16000 / hop

  def num_frames(self, num_samples: int) -> int:
    """Frames the conv feature encoder produces from `num_samples` samples."""
    n = num_samples
    for k, s in zip(self.conv_kernel, self.conv_stride):
      n = (n - k) // s + 1
    return n

  @classmethod
  def from_hf_dict(cls, d: Mapping[str, Any]) -> "EncoderConfig":
    """Builds a config from a transformers config.json dict, ignoring fields that do not shape
    the encoder (dropouts, vocab, masking)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields}
    if "model_type" in d:
      kw["model_type"] = "wav2vec2" if "wav2vec2" in d["model_type"] else "hubert"
    return cls(**kw)

  def to_hf_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def base(**overrides) -> EncoderConfig:
  """wav2vec 2.0 / HuBERT Base: 12 post-LN layers, 768 wide (the paper's backbone)."""
  return dataclasses.replace(EncoderConfig(), **overrides)


def large(**overrides) -> EncoderConfig:
  """wav2vec 2.0 / HuBERT Large (LV-60): 24 pre-LN layers, 1024 wide, layer-norm conv stack."""
  return dataclasses.replace(
      EncoderConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                    intermediate_size=4096, conv_bias=True, feat_extract_norm="layer",
                    do_stable_layer_norm=True), **overrides)


def small(**overrides) -> EncoderConfig:
  """A laptop-sized encoder with the Base layout (post-LN, group-norm conv): 12 layers so that the
  paper's exits 3/6/9/12 exist, 128 wide, a narrower conv stack. For CPU runs and tests."""
  return dataclasses.replace(
      EncoderConfig(hidden_size=128, num_hidden_layers=12, num_attention_heads=4,
                    intermediate_size=256, conv_dim=(64,) * 7, num_conv_pos_embeddings=16,
                    num_conv_pos_embedding_groups=4), **overrides)


PRESETS = {"base": base, "large": large, "small": small}


def get_preset(name: str, **overrides) -> EncoderConfig:
  if name not in PRESETS:
    raise ValueError(f"unknown encoder preset {name!r}; choose one of {sorted(PRESETS)}")
  return PRESETS[name](**overrides)
