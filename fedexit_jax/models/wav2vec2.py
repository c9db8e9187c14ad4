"""wav2vec 2.0 / HuBERT encoder: the functional API on plain parameter dicts.

Each function binds a parameter dict to the Flax modules of fedexit_jax/models/modules.py (where
the computation and its layout choices are documented) and runs them. The federated engine, the
converter, the checkpoints and the pretraining code pass these dicts around and slice, average
and save them like any pytree.

Both checkpoint families share one architecture (transformers' HubertModel and Wav2Vec2Model have
the same parameter names), so one encoder serves both. Semantics follow transformers exactly (see
tests/test_parity_transformers.py).

Parameter tree (H hidden, L layers, C conv channels, K positional kernel, G groups):
  feature_extractor.conv_layers.{i}: conv {kernel [k, C_in, C_out], bias? [C_out]},
                                     norm? {scale, bias [C_out]} (group norm on layer 0 of "group",
                                     layer norm on every layer of "layer")
  feature_projection: layer_norm? {scale, bias [C]}, projection {kernel [C, H], bias [H]}
  encoder.pos_conv: weight_v [K, H/G, H], weight_g [K], bias [H]
  encoder.layer_norm: {scale, bias [H]}
  encoder.layers: attention.{q,k,v,out}_proj {kernel [L, H, H], bias [L, H]}, layer_norm,
                  feed_forward.intermediate_dense {kernel [L, H, I]}, .output_dense {[L, I, H]},
                  final_layer_norm
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from flax import nnx

from fedexit_jax.models import modules
from fedexit_jax.models.config import EncoderConfig
from fedexit_jax.models.modules import activation, frame_lengths  # noqa: F401 (public helpers)

Params = dict[str, Any]

# The public functions are jitted with the (frozen, hashable) config and the depth static, so eager
# callers get one compiled program instead of hundreds of op-by-op dispatches; inside an outer
# jit/vmap/grad they simply inline.
_jit_config = functools.partial(jax.jit, static_argnums=(0,), static_argnames=("config",))
# depth is the 5th parameter of encode_features and encode, positional or keyword
_jit_config_depth = functools.partial(jax.jit, static_argnums=(0, 4), static_argnames=("config", "depth"))


@functools.lru_cache(maxsize=None)
def graphdef(cls: type, *args) -> nnx.GraphDef:
  """The structure of module `cls(*args, rngs=...)` without its arrays (built abstractly once)."""
  return nnx.graphdef(nnx.eval_shape(lambda: cls(*args, rngs=nnx.Rngs(0))))


def bind(cls: type, args: tuple, params: Params) -> nnx.Module:
  """Module `cls(*args)` holding `params` (a plain dict, as `nnx.to_pure_dict(nnx.state(m))` gives;
  its arrays may be tracers, and stacked layers may hold fewer rows than the config's)."""
  return nnx.merge(graphdef(cls, *args), params)


@_jit_config
def init_params(config: EncoderConfig, rng: jax.Array) -> Params:
  """Random parameters with transformers' initialisation scheme (for tests and from-scratch runs;
  real runs load a pretrained checkpoint through fedexit_jax.convert)."""
  encoder = modules.init_fast(lambda rngs: modules.Encoder(config, rngs=rngs), rng)
  return nnx.to_pure_dict(nnx.state(encoder))


@functools.partial(jax.jit, static_argnums=(0, 4), static_argnames=("config", "mask_group_norm"))
def extract_features(config: EncoderConfig, params: Params, waveform: jax.Array,
                     attention_mask: jax.Array | None = None, mask_group_norm: bool = False
                     ) -> tuple[jax.Array, jax.Array]:
  """Conv feature encoder: waveform [B, S] -> (features [B, T, conv_dim[-1]], frame_mask [B, T])
  (modules.FeatureEncoder; mask_group_norm: group-norm statistics over the valid samples only).
  `params` needs only "feature_extractor"."""
  fe = bind(modules.FeatureEncoder, (config,), params["feature_extractor"])
  return fe(waveform, attention_mask, mask_group_norm)


@functools.partial(jax.jit, static_argnums=(0, 4), static_argnames=("config", "depth", "unroll"))
def encode_features(config: EncoderConfig, params: Params, features: jax.Array,
                    frame_mask: jax.Array | None = None, depth: int | None = None, *,
                    unroll: int | bool = 1, time_mask: jax.Array | None = None,
                    mask_embedding: jax.Array | None = None) -> jax.Array:
  """Feature projection + transformer to a static `depth`: -> hidden [depth, B, T, H]
  (modules.Encoder.encode_features; hidden[i] is transformers' output_hidden_states[i + 1]).

  `params` needs feature_projection and encoder (the feature extractor may be absent); its
  stacked layers need at least `depth` rows. `unroll`, `time_mask`, `mask_embedding`: see
  modules.project_and_encode."""
  proj = bind(modules.FeatureProjection, (config,), params["feature_projection"])
  enc = bind(modules.TransformerEncoder, (config,), params["encoder"])
  return modules.project_and_encode(proj, enc, features, frame_mask, depth, unroll=unroll,
                                    time_mask=time_mask, mask_embedding=mask_embedding)


@_jit_config_depth
def encode(config: EncoderConfig, params: Params, waveform: jax.Array,
           attention_mask: jax.Array | None = None, depth: int | None = None) -> jax.Array:
  """waveform [B, S] (16 kHz) -> hidden [depth, B, T, H]; hidden[i] is transformers'
  output_hidden_states[i + 1] on the same input (see modules.TransformerEncoder for the pre-LN
  last layer)."""
  features, frame_mask = extract_features(config, params, waveform, attention_mask)
  return encode_features(config, params, features,
                         None if attention_mask is None else frame_mask, depth)


def num_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
