"""Baseline (b): the federated round a Flower + transformers user runs, in PyTorch.

For every client, one after another: load the global weights into a transformers HubertModel
truncated to the client's depth (only its first d encoder layers are kept), train local_steps SGD
steps on raw audio (freeze_feature_encoder(): the CNN gets no gradient but is still run on every
batch, as in transformers' fine-tuning recipes), stats pooling + a linear head at exit d, then add
the client's delta into a depth-aware weighted mean (the paper's n_i * L_i weights). Dropout,
layerdrop and SpecAugment are off, as on the JAX side.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from benchmarks.common import EXITS, Workload


def stats_pool(hidden: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
  mean = hidden.mean(dim=1)
  var = ((hidden - mean[:, None]) ** 2).mean(dim=1)
  return torch.cat([mean, torch.sqrt(var + eps)], dim=-1)


def exit_heads(head_params: dict[str, Any]) -> dict[int, torch.nn.Linear]:
  """One linear head per exit, with the JAX side's initial weights (kernel [E, 2H, C])."""
  heads = {}
  for i, e in enumerate(EXITS):
    kernel = np.asarray(head_params["kernel"][i])
    lin = torch.nn.Linear(*kernel.shape)
    with torch.no_grad():
      lin.weight.copy_(torch.from_numpy(kernel.T.copy()))
      lin.bias.copy_(torch.from_numpy(np.asarray(head_params["bias"][i]).copy()))
    heads[e] = lin
  return heads


def truncate(hf_model, depth: int):
  """A copy of `hf_model` keeping its first `depth` encoder layers, the CNN frozen, in train
  mode: what a depth-`depth` client trains."""
  m = copy.deepcopy(hf_model)
  m.encoder.layers = m.encoder.layers[:depth]
  m.config.num_hidden_layers = depth
  m.feature_extractor._freeze_parameters()  # what HubertFor*.freeze_feature_encoder() calls
  m.train()
  return m


def trainable(model) -> dict[str, torch.Tensor]:
  return {n: p for n, p in model.named_parameters() if p.requires_grad}


def local_train(w: Workload, model, head, waves: torch.Tensor, labels: torch.Tensor,
                perm: np.ndarray) -> list[float]:
  """One client's w.local_steps SGD steps over its examples in the order `perm`; the losses."""
  opt = torch.optim.SGD(list(trainable(model).values()) + list(head.parameters()),
                        lr=w.learning_rate)
  losses = []
  for s in range(w.local_steps):
    idx = torch.from_numpy(perm[s * w.batch_size:(s + 1) * w.batch_size])
    hidden = model(waves[idx]).last_hidden_state
    loss = torch.nn.functional.cross_entropy(head(stats_pool(hidden)), labels[idx])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    losses.append(float(loss.detach()))
  return losses


class TorchFederation:
  """Global PyTorch model + heads, and one truncated model per depth level (built once)."""

  def __init__(self, w: Workload, hf_model, head_params: dict[str, Any], device: str = "cpu"):
    self.w = w
    self.global_model = hf_model.to(device)
    self.heads = {e: h.to(device) for e, h in exit_heads(head_params).items()}
    self.models = {d: (truncate(hf_model, d), copy.deepcopy(self.heads[d]))
                   for d in w.depth_levels}

  def run_round(self, waves: torch.Tensor, labels: torch.Tensor, depths: np.ndarray,
                rng: np.random.Generator) -> float:
    """One round over all clients; returns the mean local loss."""
    w = self.w
    gparams = dict(self.global_model.named_parameters())
    num = {n: torch.zeros_like(p) for n, p in gparams.items() if p.requires_grad}
    den = {n: 0.0 for n in num}
    hnum = {e: [torch.zeros_like(p) for p in h.parameters()] for e, h in self.heads.items()}
    hden = {e: 0.0 for e in self.heads}
    losses = []
    for k, d in enumerate(depths.tolist()):
      model, head = self.models[d]
      local = trainable(model)
      with torch.no_grad():  # set_parameters: the server's weights into the client model
        for n, p in local.items():
          p.copy_(gparams[n])
        for p, g in zip(head.parameters(), self.heads[d].parameters()):
          p.copy_(g)
      perm = rng.permutation(w.examples_per_client)
      losses += local_train(w, model, head, waves[k], labels[k], perm)
      weight = float(w.examples_per_client * d)
      with torch.no_grad():  # get_parameters + the server's weighted, depth-aware sum
        for n, p in local.items():
          num[n].add_(p - gparams[n], alpha=weight)
          den[n] += weight
        for acc, p, g in zip(hnum[d], head.parameters(), self.heads[d].parameters()):
          acc.add_(p - g, alpha=weight)
        hden[d] += weight
    with torch.no_grad():
      for n, p in gparams.items():
        if n in num and den[n] > 0:
          p.add_(num[n] / den[n])
      for e, h in self.heads.items():
        if hden[e] > 0:
          for p, acc in zip(h.parameters(), hnum[e]):
            p.add_(acc / hden[e])
    return float(np.mean(losses))  # float(loss) above also waits for the device, as real loops do
