"""An EarlyExitModel with a parameter layout and no forward pass, for tests that feed the engine's
tree functions deltas directly: stacked layers under backbone.encoder.layers, heads under heads."""
from __future__ import annotations

import dataclasses

from fedexit_jax import federated as fl


@dataclasses.dataclass(frozen=True)
class LayoutOnly(fl.EarlyExitModel):
  exits: tuple
  num_layers: int
  layer_path = ("backbone", "encoder", "layers")

  def logits(self, params, inputs, input_mask, depth, heads_at):
    raise NotImplementedError("layout only: the test feeds deltas directly")
