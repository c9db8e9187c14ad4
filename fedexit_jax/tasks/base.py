"""A task: the small unit that differs between the paper's five tasks. Everything else (the
backbone, the depth buckets, the round, the masked tree-mean, checkpoints, accounting, the
scenarios runner) is shared.

A task says
  - where its corpus comes from (`load`: the offline stand-in or the real corpus folder), as a
    Corpus of decoded utterances with the clients' part and the central test set;
  - what a label is (`labels`: a class [U] or token ids [U, L]);
  - its exit head (`head`: "pooled" or "frames") with `num_outputs` classes / symbols, and the
    objective the engine trains it with (`objective`);
  - its metrics (`metrics`, from the engine's evaluation; `extra_metrics` for what needs more
    than the test set's outputs, e.g. speaker verification's EER).
Metric values are fractions per evaluated exit; "lower is better" for every one of them.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, NamedTuple

import ml_collections
import numpy as np

from fedexit_jax import federated as fl


class Corpus(NamedTuple):
  train: Any        # the clients' utterances (data.utterances.Utterances or KeywordData)
  test: Any         # the central test set (speakers or utterances no client has)
  root: Path
  extra: dict = {}  # task-specific sets, e.g. {"verify": (Utterances, trials)} for speaker id


class Task(abc.ABC):
  name: str = ""
  head: str = "pooled"
  objective: fl.Objective = fl.CrossEntropy()
  primary: str = "error"    # the metric shown in progress bars, summaries and the scenarios
  # Pad-and-mask: frames past an utterance's end are masked (attention, pooling, CTC). Keyword
  # spotting keeps 1 s clips unmasked for group-norm (Base) encoders, as transformers runs them.
  mask_padding: bool = True

  @abc.abstractmethod
  def load(self, config: ml_collections.ConfigDict) -> Corpus:
    """Generates (once, cached) or finds the corpus and decodes it."""

  @abc.abstractmethod
  def num_outputs(self, config: ml_collections.ConfigDict, corpus: Corpus | None) -> int:
    """Classes of the pooled head, or the CTC vocabulary of the frame head."""

  def labels(self, part) -> np.ndarray:
    """Int labels [U, ...] of a corpus part, as the objective reads them."""
    return np.asarray(part.labels, np.int32)

  def metrics(self, ev: dict[str, np.ndarray], test) -> dict[str, np.ndarray]:
    """{metric: [n] per evaluated exit} from fl.evaluate's output on the test set."""
    return {"error": ev["error"]}

  def objective_for(self, config: ml_collections.ConfigDict) -> fl.Objective:
    """The objective a run with `config` trains and evaluates with (default: `objective`)."""
    del config
    return self.objective

  def extra_metrics(self, config, encoder, params: dict, frozen: dict, exits: tuple[int, ...],
                    corpus: Corpus, ev: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Metrics that need more than the test set's outputs `ev` (speaker verification, lexicon
    decoding); {} if none."""
    del config, encoder, params, frozen, exits, corpus, ev
    return {}

  def chance(self, config, corpus: Corpus | None) -> float | None:
    """The primary metric of a uniform guess (the plots' dashed line), None if not meaningful."""
    return 1.0 - 1.0 / self.num_outputs(config, corpus)
