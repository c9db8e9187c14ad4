"""Converted params + config as an orbax checkpoint, so later runs skip torch and the conversion.

Layout of `path`: config.json (EncoderConfig fields, transformers-style) and params/ (orbax).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from fedexit_jax.models import wav2vec2
from fedexit_jax.models.config import EncoderConfig

FORMAT = "fedexit_jax.encoder/1"


def save_converted(path: str | os.PathLike, config: EncoderConfig, params: dict[str, Any]) -> Path:
  """Writes config + params under `path` (must not exist yet: a checkpoint is never overwritten)."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  path = Path(path).absolute()
  if path.exists():
    raise FileExistsError(f"{path} already exists; choose a new folder")
  path.mkdir(parents=True)
  (path / "config.json").write_text(json.dumps({"format": FORMAT, **config.to_hf_dict()}, indent=2))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path / "params", jax.tree.map(jnp.asarray, params))
  return path


def load_converted(path: str | os.PathLike) -> tuple[EncoderConfig, dict[str, Any]]:
  """Reads what save_converted wrote; the params tree is checked against the config's shapes."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  path = Path(path).absolute()
  meta = json.loads((path / "config.json").read_text())
  if meta.pop("format", None) != FORMAT:
    raise ValueError(f"{path} is not a converted encoder checkpoint (format {FORMAT!r} expected)")
  config = EncoderConfig.from_hf_dict(meta)
  target = jax.eval_shape(lambda: wav2vec2.init_params(config, jax.random.PRNGKey(0)))
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(path / "params", target)
  return config, params
