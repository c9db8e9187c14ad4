"""What every benchmark shares: the workload (one model, one cohort, same data both sides), the
same weights for JAX and PyTorch, steady-state timing, and a description of the machine.

The weights come from one randomly initialised transformers HubertModel converted with
fedexit_jax.convert, so the JAX engine and the PyTorch loop train the very same network.
Without torch the JAX params come from wav2vec2.init_params (only the PyTorch baseline needs it).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import platform
import statistics
import time
from typing import Any, Callable

import jax
import numpy as np
import optax

from fedexit_jax.speech_model import SpeechExitModel
from fedexit_jax import federated as fl
from fedexit_jax import models
from fedexit_jax.models import config as mconfig
from fedexit_jax.models import heads, wav2vec2

EXITS = (3, 6, 9, 12)
LEVELS = (3, 6)  # the paper's two tiers: half the clients capped at layer 3, half at layer 6


@dataclasses.dataclass(frozen=True)
class Workload:
  """One benchmark setting, identical for every contender.

  Each client holds batch_size * local_steps examples of clip_samples raw 16 kHz samples and runs
  exactly local_steps SGD steps (one pass); depths alternate 3, 6 (the mixed tiers)."""
  preset: str = "small"
  overrides: tuple[tuple[str, Any], ...] = ()
  num_clients: int = 32
  batch_size: int = 4
  local_steps: int = 2
  clip_samples: int = 8000
  num_classes: int = 12
  learning_rate: float = 0.05
  chunk_size: int | None = None  # None: the engine's per-backend default
  depth_levels: tuple[int, ...] = LEVELS
  seed: int = 0

  @property
  def config(self) -> mconfig.EncoderConfig:
    return mconfig.get_preset(self.preset, **dict(self.overrides))

  @property
  def examples_per_client(self) -> int:
    return self.batch_size * self.local_steps

  def depths(self) -> np.ndarray:
    lv = self.depth_levels
    return np.array([lv[i % len(lv)] for i in range(self.num_clients)], np.int32)

  def client_spec(self) -> fl.ClientSpec:
    return _client_spec(self.config, self.learning_rate, self.local_steps, self.batch_size)

  def round_spec(self, chunk_size: int | None = "same") -> fl.RoundSpec:
    chunk = self.chunk_size if chunk_size == "same" else chunk_size
    return fl.RoundSpec(self.client_spec(), weighting="paper", depth_levels=self.depth_levels,
                        chunk_size=chunk)


@functools.lru_cache(maxsize=None)
def _client_spec(config, learning_rate, local_steps, batch_size) -> fl.ClientSpec:
  # One object per setting: optax.sgd() makes new closures each call, and a new ClientSpec (hence
  # RoundSpec) would recompile the round.
  return fl.ClientSpec(SpeechExitModel(config, EXITS), optimizer=optax.sgd(learning_rate), loss="last",
                       local_steps=local_steps, batch_size=batch_size)


def waveforms(w: Workload) -> tuple[np.ndarray, np.ndarray]:
  """(waves [K, N, S] float32, labels [K, N] int32): noise, the cost does not depend on content."""
  rng = np.random.default_rng(w.seed)
  waves = 0.1 * rng.standard_normal((w.num_clients, w.examples_per_client, w.clip_samples),
                                    dtype=np.float32)
  labels = rng.integers(0, w.num_classes, (w.num_clients, w.examples_per_client)).astype(np.int32)
  return waves, labels


def hf_config_dict(config: mconfig.EncoderConfig) -> dict[str, Any]:
  """transformers HubertConfig kwargs for the same architecture, with everything stochastic off
  (dropout, layerdrop, SpecAugment) because the JAX side has none of it."""
  d = {k: v for k, v in config.to_hf_dict().items() if k != "model_type"}
  d.update(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
           final_dropout=0.0, layerdrop=0.0, apply_spec_augment=False, mask_time_prob=0.0)
  return d


def torch_hubert(config: mconfig.EncoderConfig, seed: int = 0):
  """A randomly initialised transformers HubertModel (None without torch/transformers)."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  torch.manual_seed(seed)
  return transformers.HubertModel(transformers.HubertConfig(**hf_config_dict(config)))


def jax_params(w: Workload, torch_model=None) -> tuple[dict, dict, dict]:
  """(trainable {"backbone", "heads"}, frozen {"feature_extractor"}, head params) — the backbone
  converted from `torch_model` when given, so both sides start from the same weights."""
  cfg = w.config
  k1, k2 = jax.random.split(jax.random.key(w.seed))
  if torch_model is not None:
    from fedexit_jax.convert import convert_state_dict  # pylint: disable=import-outside-toplevel
    sd = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    model_params, _ = convert_state_dict(sd, cfg)
    model_params = jax.tree.map(jax.numpy.asarray, model_params)
  else:
    model_params = wav2vec2.init_params(cfg, k1)
  head_params = heads.init_exit_heads(k2, cfg.hidden_size, w.num_classes, len(EXITS))
  trainable, frozen = models.split_params(model_params, head_params)
  return trainable, frozen, head_params


def block(tree):
  return jax.block_until_ready(tree)


def median_time(fn: Callable[[], Any], reps: int, warmup: int = 1) -> tuple[float, list[float]]:
  """Median wall-clock seconds of `fn()` over `reps` calls after `warmup` untimed calls (which
  compile). `fn` must wait for its own result (block_until_ready)."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), times


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def num_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def machine() -> dict[str, Any]:
  """Where the numbers came from."""
  dev = jax.devices()[0]
  info = {"backend": jax.default_backend(), "device_kind": dev.device_kind,
          "num_devices": jax.device_count(), "cpu_model": cpu_model(), "cpu_cores": num_cores(),
          "jax_version": jax.__version__, "python": platform.python_version(),
          "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
  try:
    import torch  # pylint: disable=import-outside-toplevel
    info["torch_version"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
  except ImportError:
    pass
  return info
