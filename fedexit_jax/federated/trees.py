"""What a depth cuts out of the trainable tree.

The server trains one parameter pytree; the model (model.EarlyExitModel) says which leaves are
stacked per layer, per exit, or shared. A client of depth d holds a static slice: layers [:d] and
the exit heads its loss trains, which are the rows `exit_rows` gives: only the exit at its depth
when the loss reads only the deepest exit (the paper), every exit <= d when it reads them all. A
head a client's loss does not read gets no gradient, so the client neither holds, computes,
uploads nor is counted for it: Eq. 1 averages every row over "the clients that trained" it.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fedexit_jax.federated.model import EarlyExitModel

PyTree = Any


def num_exits_upto(exits: Sequence[int], depth: int) -> int:
  """How many of the (sorted) exits a client of this depth trains."""
  return sum(1 for e in exits if e <= depth)


def exit_rows(exits: Sequence[int], depth: int, deepest_only: bool = False) -> tuple[int, int]:
  """[start, stop) of the stacked exit-head rows a depth-`depth` client trains: the one exit at its
  depth if `deepest_only` (loss on the deepest exit), else every exit <= depth."""
  n = num_exits_upto(exits, depth)
  if n == 0:
    raise ValueError(f"depth {depth} is below the first exit {tuple(exits)[0]}: it trains no exit")
  return (n - 1, n) if deepest_only else (0, n)


def trained_exits(exits: Sequence[int], depths: Sequence[int], deepest_only: bool = False
                  ) -> tuple[int, ...]:
  """The exits that some client of these depths trains (the only ones worth evaluating)."""
  rows = set()
  for d in set(int(x) for x in depths):
    rows.update(range(*exit_rows(exits, d, deepest_only)))
  return tuple(e for i, e in enumerate(exits) if i in rows)


def validate_depth(exits: Sequence[int], depth: int, num_layers: int) -> None:
  if tuple(exits) != tuple(sorted(set(exits))):
    raise ValueError(f"exits must be strictly increasing, got {tuple(exits)}")
  if not 1 <= depth <= num_layers:
    raise ValueError(f"client depth {depth} is outside 1..{num_layers} (backbone layers)")
  if depth not in exits:
    raise ValueError(f"client depth {depth} is not an exit layer {tuple(exits)}: a client trains "
                     "up to one of its exits")


def row_range(model: EarlyExitModel, path, depth: int, deepest_only: bool = False
              ) -> tuple[int, int] | None:
  """[start, stop) of the leading-axis rows of a leaf a depth-`depth` client trains; None for a
  shared leaf (trained whole)."""
  kind = model.param_kind(path)
  if kind == "layer":
    return (0, depth)
  if kind == "exit":
    return exit_rows(model.exits, depth, deepest_only)
  return None


def slice_to_depth(model: EarlyExitModel, tree: PyTree, depth: int,
                   deepest_only: bool = False) -> PyTree:
  """The part a depth-`depth` client holds: layer leaves [:depth], exit leaves `exit_rows`."""
  def leaf(path, x):
    rows = row_range(model, path, depth, deepest_only)
    return x if rows is None else x[rows[0]:rows[1]]
  return jax.tree_util.tree_map_with_path(leaf, tree)


def select_exits(model: EarlyExitModel, tree: PyTree, heads_at: Sequence[int]) -> PyTree:
  """The tree with its exit leaves cut to the rows of the exits `heads_at` (in that order)."""
  rows = np.asarray([tuple(model.exits).index(e) for e in heads_at])
  return jax.tree_util.tree_map_with_path(
      lambda p, x: x[rows] if model.param_kind(p) == "exit" else x, tree)


def pad_to_full(model: EarlyExitModel, sliced: PyTree, full: PyTree, depth: int,
                deepest_only: bool = False) -> PyTree:
  """Zero-pads a `slice_to_depth` tree back to the full tree's shapes (rows where they came
  from)."""
  def leaf(path, s, f):
    rows = row_range(model, path, depth, deepest_only)
    if rows is None:
      return s
    pad = [(rows[0], f.shape[0] - rows[1])] + [(0, 0)] * (s.ndim - 1)
    return jnp.pad(s, pad)
  return jax.tree_util.tree_map_with_path(leaf, sliced, full)


def mask_shape(model: EarlyExitModel, path, x) -> tuple[int, ...]:
  """Shape of a leaf's mask/denominator: per row for layer and exit leaves, one value otherwise."""
  if model.param_kind(path) in ("layer", "exit"):
    return (x.shape[0],) + (1,) * (x.ndim - 1)
  return (1,) * x.ndim


def depth_mask(model: EarlyExitModel, tree: PyTree, depth: int, everything: bool = False,
               deepest_only: bool = False) -> PyTree:
  """One client's 0/1 mask over the full tree: 1 for the layers and exit heads it trained.

  everything=True gives all ones (the hetero-FedAvg baseline, where untouched deep layers and
  heads are sent back and averaged in).
  """
  def leaf(path, x):
    shape = mask_shape(model, path, x)
    rows = row_range(model, path, depth, deepest_only)
    if everything or rows is None:
      return np.ones(shape, np.float32)
    r = np.arange(shape[0])
    return ((r >= rows[0]) & (r < rows[1])).astype(np.float32).reshape(shape)
  return jax.tree_util.tree_map_with_path(leaf, tree)


def zero_denominator(model: EarlyExitModel, tree: PyTree) -> PyTree:
  return jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.zeros(mask_shape(model, p, x), jnp.float32), tree)
