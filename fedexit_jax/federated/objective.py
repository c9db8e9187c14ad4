"""What a client minimises and what evaluation measures, given what the model's exits output.

The engine never looks inside a model's outputs: `EarlyExitModel.logits` returns a pytree (for a
classifier the logits [n, B, C]; for a CTC model logits [n, B, T, V] and the frame mask), the
labels are an int array [N, ...] of any trailing shape, and the objective turns the two into a
per-exit, per-example loss. So one round, one set of depth buckets and one masked tree-mean carry
every task; a task contributes its objective (and its model's head), not a fork of the round.

An objective is a frozen dataclass (hashable: it is part of ClientSpec, the static description).
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any


class Objective(abc.ABC):
  """loss, the distillation view and the per-example evaluation of one kind of exit output."""

  @abc.abstractmethod
  def example_loss(self, outputs: PyTree, labels: jax.Array) -> jax.Array:
    """[n, B]: the loss of each of the n exits on each example (padding examples are masked by
    the caller)."""

  @abc.abstractmethod
  def log_probs(self, outputs: PyTree, temperature: float) -> tuple[jax.Array, jax.Array]:
    """(log-probabilities [n, B, P, C] of the outputs / temperature, weights [B, P]) over P
    positions per example (1 for a classifier, frames for CTC): DepthFL's mutual distillation
    pulls every exit towards the others at each weighted position."""

  @abc.abstractmethod
  def eval_outputs(self, outputs: PyTree, labels: jax.Array) -> dict[str, jax.Array]:
    """Per-example results [n, B, ...] computed on the device while evaluating; "loss" [n, B]
    is required (the mean test loss, the divergence check)."""

  def summarize(self, collected: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Host side: per-exit metrics [n] from the concatenated eval_outputs [n, M, ...]."""
    return {"loss": collected["loss"].mean(axis=1)}


@dataclasses.dataclass(frozen=True)
class CrossEntropy(Objective):
  """Softmax cross-entropy of class logits [n, B, C] against labels [B] (utterance
  classification: keyword spotting, speaker id, emotion). Evaluation: "correct", "loss" (NLL) and
  "confidence" (max softmax probability, for the confidence-threshold early-exit policy)."""

  def example_loss(self, outputs, labels):
    logp = jax.nn.log_softmax(outputs, axis=-1)
    return -jnp.take_along_axis(logp, labels.astype(jnp.int32)[None, :, None], axis=-1)[..., 0]

  def log_probs(self, outputs, temperature):
    logq = jax.nn.log_softmax(outputs / temperature, axis=-1)
    return logq[:, :, None, :], jnp.ones(outputs.shape[1:2] + (1,), outputs.dtype)

  def eval_outputs(self, outputs, labels):
    logp = jax.nn.log_softmax(outputs, axis=-1)
    labels = labels.astype(jnp.int32)
    nll = -jnp.take_along_axis(logp, labels[None, :, None], axis=-1)[..., 0]
    return {"correct": jnp.argmax(outputs, axis=-1) == labels[None], "loss": nll,
            "confidence": jnp.max(jnp.exp(logp), axis=-1)}

  def summarize(self, collected):
    return {"error": 1.0 - collected["correct"].mean(axis=1),
            "loss": collected["loss"].mean(axis=1)}


@dataclasses.dataclass(frozen=True)
class CTC(Objective):
  """Connectionist temporal classification (optax.ctc_loss) of frame logits against token
  sequences. Outputs: (logits [n, B, T, V], frame_mask [B, T] bool). Labels: token ids [B, U]
  padded with `blank` (the blank is never a label, so padding is unambiguous).

  The loss is per utterance (summed over its frames), divided by its label length when
  `per_token` (the usual normalisation, so long utterances do not dominate a batch). Evaluation:
  "loss" and "best_path" [n, B, T] (the argmax frame ids, -1 on padded frames); greedy decoding
  (collapse repeats, drop blanks) and WER/CER need the vocabulary and are the task's. With
  `keep_log_probs`, also "log_probs" [n, B, T, V] for a beam-search decoder (4 bytes per frame
  and symbol of the whole test set, so only when asked)."""
  blank: int = 0
  per_token: bool = True
  keep_log_probs: bool = False

  def example_loss(self, outputs, labels):
    logits, frame_mask = outputs
    labels = labels.astype(jnp.int32)
    label_pad = (labels == self.blank).astype(jnp.float32)
    frame_pad = 1.0 - frame_mask.astype(jnp.float32)

    def one_exit(lg):
      return optax.ctc_loss(lg, frame_pad, labels, label_pad, blank_id=self.blank)

    loss = jax.vmap(one_exit)(logits)  # [n, B]
    if self.per_token:
      loss = loss / jnp.maximum(jnp.sum(1.0 - label_pad, axis=-1), 1.0)[None]
    return loss

  def log_probs(self, outputs, temperature):
    logits, frame_mask = outputs
    return jax.nn.log_softmax(logits / temperature, axis=-1), frame_mask.astype(logits.dtype)

  def eval_outputs(self, outputs, labels):
    logits, frame_mask = outputs
    best = jnp.where(frame_mask[None], jnp.argmax(logits, axis=-1), -1)
    out = {"loss": self.example_loss(outputs, labels), "best_path": best.astype(jnp.int32)}
    if self.keep_log_probs:
      out["log_probs"] = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return out


def distillation(objective: Objective, outputs: PyTree, example_mask: jax.Array,
                 temperature: float) -> jax.Array:
  """DepthFL's mutual self-distillation: every exit's softened prediction is pulled towards every
  other exit's detached one, KL(teacher j || student i) averaged over the n - 1 teachers and over
  the weighted positions of the real examples, times temperature^2. 0 with one exit."""
  logq, w = objective.log_probs(outputs, temperature)  # [n, B, P, C], [B, P]
  n = logq.shape[0]
  if n < 2:
    return jnp.zeros((), logq.dtype)
  w = w * example_mask.astype(w.dtype)[:, None]
  logp_t = jax.lax.stop_gradient(logq)
  p_t = jnp.exp(logp_t)
  kl = jnp.sum(p_t[None] * (logp_t[None] - logq[:, None]), axis=-1)  # [i, j, B, P]
  off = 1.0 - jnp.eye(n)
  kl = jnp.sum(kl * off[..., None, None], axis=(0, 1)) / (n - 1)  # [B, P]
  return temperature * temperature * jnp.sum(kl * w) / jnp.maximum(jnp.sum(w), 1.0)
