"""What the engine knows of a model: the EarlyExitModel interface (and nothing else of it).

The engine imports no model file. It trains, slices, masks and averages a plain parameter pytree,
and asks the model only two things: the logits of some exits for a depth, and which leaves are
per layer, per exit or shared. Any early-exit model that answers them can be federated; the
wav2vec 2.0 / HuBERT model is one (fedexit_jax.speech_model.SpeechExitModel).

Parameter layout the engine relies on:
  "layer"  leaves under `layer_path` carry a leading axis of num_layers rows (a stacked, scanned
           layer stack): a depth-d client holds and trains rows [:d];
  "exit"   leaves under `exit_path` carry a leading axis of len(exits) rows (one head per exit):
           a client holds the rows its loss trains (trees.exit_rows);
  "shared" everything else, trained whole by every client.
"""
from __future__ import annotations

import abc
from typing import Any

import jax

PyTree = Any
KINDS = ("layer", "exit", "shared")


def path_keys(path) -> tuple:
  """Key path of a leaf (jax.tree_util) -> plain keys: ('backbone', 'encoder', 'layers', ...)."""
  return tuple(getattr(p, "key", getattr(p, "name", getattr(p, "idx", None))) for p in path)


class EarlyExitModel(abc.ABC):
  """An early-exit model as the federated engine sees it.

  Implement it as a frozen dataclass (hashable: the model is part of the static round
  description, so build it once) with:
    exits       tuple of 1-based layer numbers with an exit head, strictly increasing
    num_layers  layers in the stack (an int field or property)
    logits      the forward pass (below)
  and, if the stacked leaves sit elsewhere than under "layers" and "heads", set the class
  attributes `layer_path` and `exit_path` (key prefixes) or override `param_kind`.
  """
  exits: tuple[int, ...]
  num_layers: int
  layer_path: tuple[str, ...] = ("layers",)
  exit_path: tuple[str, ...] = ("heads",)

  @property
  def width(self) -> int | None:
    """The layers' hidden width if the model has one (it sets the CPU default of how many
    clients train together, simulate.default_chunk_size); None: unknown."""
    return None

  @abc.abstractmethod
  def logits(self, params: PyTree, inputs: jax.Array, input_mask: jax.Array, depth: int,
             heads_at: tuple[int, ...]) -> jax.Array:
    """Logits [n, B, C] of the exits `heads_at` (n of them, each <= depth), from one forward
    pass through layers 1..depth on a batch (`inputs` [B, ...], `input_mask` as ClientData holds
    it, for the model to interpret).

    `params`: "layer" leaves hold at least `depth` rows (a client holds exactly `depth`);
    "exit" leaves hold exactly one row per exit of `heads_at`, in order. depth and heads_at are
    static (Python ints)."""

  def param_kind(self, path) -> str:
    """"layer", "exit" or "shared" for the leaf at `path` (a jax.tree_util key path)."""
    keys = path_keys(path)
    if keys[:len(self.exit_path)] == tuple(self.exit_path):
      return "exit"
    if keys[:len(self.layer_path)] == tuple(self.layer_path):
      return "layer"
    return "shared"

  def validate(self) -> None:
    """Checks exits against num_layers (call from __post_init__)."""
    exits = tuple(self.exits)
    if (not exits or list(exits) != sorted(set(exits)) or exits[0] < 1
        or exits[-1] > self.num_layers):
      raise ValueError(f"exits must be strictly increasing layer numbers in "
                       f"[1, {self.num_layers}], got {exits}")


def check_layout(model: EarlyExitModel, params: PyTree) -> None:
  """Every "layer" leaf has num_layers rows and every "exit" leaf len(exits) rows; names the
  first leaf that does not (a mis-declared model would otherwise slice the wrong rows)."""
  want = {"layer": model.num_layers, "exit": len(model.exits)}
  seen = set()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    kind = model.param_kind(path)
    seen.add(kind)
    if kind in want and (leaf.ndim == 0 or leaf.shape[0] != want[kind]):
      raise ValueError(f"leaf {'/'.join(map(str, path_keys(path)))} is a {kind!r} leaf of the "
                       f"model, so its leading axis must be {want[kind]}, got shape {leaf.shape}")
  for kind in ("layer", "exit"):
    if kind not in seen:
      raise ValueError(f"the parameter tree has no {kind!r} leaf (model.{kind}_path = "
                       f"{getattr(model, kind + '_path', None)}): the engine needs stacked "
                       "layers and stacked exit heads")

