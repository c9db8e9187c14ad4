"""The trainable tree and how a depth cuts it.

The server trains `{"backbone": ..., "heads": ...}` where "backbone" is the wav2vec2 parameter
tree without the frozen conv feature extractor (feature_projection, encoder.pos_conv,
encoder.layer_norm, encoder.layers stacked [L, ...]) and "heads" are the exit heads stacked
[E, ...]. A client of depth d holds a static slice: layers [:d] and the heads of the exits <= d.
Every leaf is one of three kinds:
  "layer":  under backbone.encoder.layers, leading axis L (one row per Transformer layer);
  "exit":   under heads, leading axis E (one row per exit);
  "shared": everything else, trained by every client.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


def split_params(model_params: dict, head_params: dict,
                 train_feature_encoder: bool = False) -> tuple[dict, dict]:
  """(trainable, frozen) from `wav2vec2.init_params` output and `heads.init_exit_heads` output.

  With the feature encoder frozen (default) it goes to `frozen` and is used once, to cache conv
  features; it is never copied per client. Unfrozen, it is part of the trainable tree.
  """
  backbone = {k: v for k, v in model_params.items() if k != "feature_extractor"}
  fe = model_params.get("feature_extractor")
  frozen = {}
  if fe is not None:
    if train_feature_encoder:
      backbone["feature_extractor"] = fe
    else:
      frozen["feature_extractor"] = fe
  elif train_feature_encoder:
    raise ValueError("train_feature_encoder=True but model_params has no 'feature_extractor'")
  return {"backbone": backbone, "heads": head_params}, frozen


def leaf_kind(path) -> str:
  keys = [getattr(p, "key", getattr(p, "name", None)) for p in path]
  if keys and keys[0] == "heads":
    return "exit"
  if "encoder" in keys and "layers" in keys:
    return "layer"
  return "shared"


def num_exits_upto(exits: Sequence[int], depth: int) -> int:
  """How many of the (sorted) exits a client of this depth trains."""
  return sum(1 for e in exits if e <= depth)


def validate_depth(exits: Sequence[int], depth: int, num_layers: int) -> None:
  if tuple(exits) != tuple(sorted(set(exits))):
    raise ValueError(f"exits must be strictly increasing, got {tuple(exits)}")
  if not 1 <= depth <= num_layers:
    raise ValueError(f"client depth {depth} is outside 1..{num_layers} (backbone layers)")
  if depth not in exits:
    raise ValueError(f"client depth {depth} is not an exit layer {tuple(exits)}: a client trains "
                     "up to one of its exits")


def slice_to_depth(tree: PyTree, depth: int, exits: Sequence[int]) -> PyTree:
  """The part a depth-`depth` client holds: layer leaves [:depth], exit leaves [:n_exits]."""
  n = num_exits_upto(exits, depth)

  def leaf(path, x):
    kind = leaf_kind(path)
    return x[:depth] if kind == "layer" else x[:n] if kind == "exit" else x
  return jax.tree_util.tree_map_with_path(leaf, tree)


def pad_to_full(sliced: PyTree, full: PyTree) -> PyTree:
  """Zero-pads a sliced tree's layer/exit leaves back to the full tree's shapes."""
  def leaf(s, f):
    if s.shape == f.shape:
      return s
    pad = [(0, f.shape[0] - s.shape[0])] + [(0, 0)] * (s.ndim - 1)
    return jnp.pad(s, pad)
  return jax.tree.map(leaf, sliced, full)


def mask_shape(path, x) -> tuple[int, ...]:
  """Shape of a leaf's mask/denominator: per row for layer and exit leaves, one value otherwise."""
  if leaf_kind(path) in ("layer", "exit"):
    return (x.shape[0],) + (1,) * (x.ndim - 1)
  return (1,) * x.ndim


def depth_mask(tree: PyTree, depth: int, exits: Sequence[int], everything: bool = False) -> PyTree:
  """One client's 0/1 mask over the full tree: 1 for the layers and exits it trained.

  everything=True gives all ones (the hetero-FedAvg baseline, where untouched deep layers are
  sent back and averaged in).
  """
  n = num_exits_upto(exits, depth)

  def leaf(path, x):
    shape = mask_shape(path, x)
    kind = leaf_kind(path)
    if everything or kind == "shared":
      return np.ones(shape, np.float32)
    rows = depth if kind == "layer" else n
    return (np.arange(shape[0]) < rows).astype(np.float32).reshape(shape)
  return jax.tree_util.tree_map_with_path(leaf, tree)


def zero_denominator(tree: PyTree) -> PyTree:
  return jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.zeros(mask_shape(p, x), jnp.float32), tree)
