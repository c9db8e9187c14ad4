"""wav2vec 2.0 / HuBERT encoder as pure functions on a plain dict pytree.

Both checkpoint families share one architecture (transformers' HubertModel and Wav2Vec2Model have
the same parameter names), so one file serves both:

  waveform -> conv feature encoder -> feature projection -> positional conv -> transformer layers

Layout choices, and why:
- Every leaf under params["encoder"]["layers"] carries a leading layer axis. Running to depth d is
  the static slice [:d] plus a `lax.scan`, so a depth-3 client compiles (and costs) a quarter of a
  depth-12 one, and federated code can mask or average layers as one array per weight.
- Convolutions are einsums over unfolded windows rather than `lax.conv`: a grouped `lax.conv`
  (the positional conv) is pathologically slow on CPU under `vmap` and in the backward pass.
- Activations are channel-last [B, T, C]; kernels are stored input-major ([in, out], [k, in, out]),
  the PyTorch -> JAX transposes live in fedexit_jax/convert.

Semantics follow transformers exactly (see tests/test_parity_transformers.py): exact-erf GELU for
"gelu", SamePad removes the last positional-conv frame for even kernels, padded frames are zeroed
before the positional conv and masked out as attention keys.

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

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from fedexit_jax.models.config import EncoderConfig

Params = dict[str, Any]

# The public functions are jitted with the (frozen, hashable) config and the depth static, so eager
# callers get one compiled program instead of hundreds of op-by-op dispatches; inside an outer
# jit/vmap/grad they simply inline.
_jit_config = functools.partial(jax.jit, static_argnums=(0,), static_argnames=("config",))
# depth is the 5th parameter of encode_features and encode, positional or keyword
_jit_config_depth = functools.partial(jax.jit, static_argnums=(0, 4), static_argnames=("config", "depth"))

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    # transformers' "gelu" is the exact erf GELU; "gelu_new"/"gelu_pytorch_tanh" the tanh one.
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  if name not in _ACTIVATIONS:
    raise ValueError(f"unsupported activation {name!r}; supported: {sorted(_ACTIVATIONS)}")
  return _ACTIVATIONS[name]


# ----------------------------------------------------------------------------- initialisation


@dataclasses.dataclass(frozen=True)
class _Normal:
  """Placeholder for an N(0, std^2) leaf; init_params fills them all from ONE normal draw (one
  jax.random call per leaf made init_params take ~7 s to compile on CPU)."""
  shape: tuple[int, ...]
  std: float


def _dense_init(shape_in: int, shape_out: int, lead: tuple[int, ...] = ()) -> Params:
  # transformers initialises Linear weights with N(0, initializer_range=0.02) and zero bias.
  return {"kernel": _Normal(lead + (shape_in, shape_out), 0.02),
          "bias": jnp.zeros(lead + (shape_out,), jnp.float32)}


def _norm_init(dim: int, lead: tuple[int, ...] = ()) -> Params:
  return {"scale": jnp.ones(lead + (dim,), jnp.float32), "bias": jnp.zeros(lead + (dim,), jnp.float32)}


def _fill_normals(rng: jax.Array, tree: Params) -> Params:
  leaves, treedef = jax.tree.flatten(tree)
  sizes = [math.prod(x.shape) for x in leaves if isinstance(x, _Normal)]
  flat = jax.random.normal(rng, (sum(sizes),), jnp.float32)
  out, offset = [], 0
  for x in leaves:
    if isinstance(x, _Normal):
      n = math.prod(x.shape)
      x = x.std * flat[offset:offset + n].reshape(x.shape)
      offset += n
    out.append(x)
  return jax.tree.unflatten(treedef, out)


@_jit_config
def init_params(config: EncoderConfig, rng: jax.Array) -> Params:
  """Random parameters with transformers' initialisation scheme (for tests and from-scratch runs;
  real runs load a pretrained checkpoint through fedexit_jax.convert)."""
  c = config
  conv_layers = {}
  c_in = 1
  for i, (c_out, k) in enumerate(zip(c.conv_dim, c.conv_kernel)):
    # kaiming normal, as transformers' _init_weights
    layer = {"conv": {"kernel": _Normal((k, c_in, c_out), math.sqrt(2.0 / (c_in * k)))}}
    if c.conv_bias:
      layer["conv"]["bias"] = jnp.zeros((c_out,), jnp.float32)
    if c.feat_extract_norm == "layer" or i == 0:
      layer["norm"] = _norm_init(c_out)
    conv_layers[str(i)] = layer
    c_in = c_out

  h, L, inter = c.hidden_size, c.num_hidden_layers, c.intermediate_size
  feature_projection = {"projection": _dense_init(c.conv_dim[-1], h)}
  if _has_feat_proj_layer_norm(c):
    feature_projection["layer_norm"] = _norm_init(c.conv_dim[-1])

  K, G = c.num_conv_pos_embeddings, c.num_conv_pos_embedding_groups
  pos_conv = {"weight_v": _Normal((K, h // G, h), 2.0 / math.sqrt(K * h)),  # as transformers
              "bias": jnp.zeros((h,), jnp.float32)}

  lead = (L,)
  layers = {
      "attention": {name: _dense_init(h, h, lead) for name in ("q_proj", "k_proj", "v_proj", "out_proj")},
      "layer_norm": _norm_init(h, lead),
      "feed_forward": {"intermediate_dense": _dense_init(h, inter, lead),
                       "output_dense": _dense_init(inter, h, lead)},
      "final_layer_norm": _norm_init(h, lead),
  }
  params = _fill_normals(rng, {
      "feature_extractor": {"conv_layers": conv_layers},
      "feature_projection": feature_projection,
      "encoder": {"pos_conv": pos_conv, "layer_norm": _norm_init(h), "layers": layers}})
  v = params["encoder"]["pos_conv"]["weight_v"]
  params["encoder"]["pos_conv"]["weight_g"] = jnp.sqrt(jnp.sum(v * v, axis=(1, 2)))  # weight == v
  return params


def _has_feat_proj_layer_norm(config: EncoderConfig) -> bool:
  # wav2vec2 always normalises the conv features; HuBERT only with feat_proj_layer_norm.
  return config.model_type == "wav2vec2" or config.feat_proj_layer_norm


# ----------------------------------------------------------------------------- building blocks


def layer_norm(p: Params, x: jax.Array, eps: float, axis: int | tuple[int, ...] = -1) -> jax.Array:
  mean = jnp.mean(x, axis=axis, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=axis, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def dense(p: Params, x: jax.Array) -> jax.Array:
  return x @ p["kernel"] + p["bias"]


def unfold(x: jax.Array, kernel: int, stride: int) -> jax.Array:
  """[B, T, C] -> [B, T_out, kernel, C] windows of a valid strided convolution, built from
  `kernel` strided slices (cheap to differentiate and to vmap, unlike a gather or lax.conv)."""
  t_out = (x.shape[1] - kernel) // stride + 1
  if t_out < 1:
    raise ValueError(f"input of {x.shape[1]} frames is shorter than the conv kernel {kernel}")
  span = stride * (t_out - 1) + 1
  return jnp.stack([x[:, j:j + span:stride] for j in range(kernel)], axis=2)


def conv1d(p: Params, x: jax.Array, stride: int) -> jax.Array:
  """Valid 1-D convolution, [B, T, C_in] -> [B, T_out, C_out], kernel [k, C_in, C_out]."""
  k = p["kernel"].shape[0]
  y = jnp.einsum("btkc,kco->bto", unfold(x, k, stride), p["kernel"])
  if "bias" in p:
    y = y + p["bias"]
  return y


def positional_conv(config: EncoderConfig, p: Params, x: jax.Array) -> jax.Array:
  """Weight-normed grouped 'same' convolution + activation, [B, T, H] -> [B, T, H].

  PyTorch pads K//2 on both sides (T + 1 outputs for even K) and SamePad drops the last frame, so
  output t reads padded inputs t .. t+K-1 in both cases. weight = g * v / ||v||, the norm taken
  over (in, out) for each tap (torch weight_norm with dim=2); g and v stay the trained parameters.

  Computed as one batched GEMM over groups, [G, B*T, K*c] @ [G, K*c, c], on unfolded windows:
  with the group axis leading XLA:CPU runs it without transposes (4x faster than an einsum with
  the group axis in the middle) and, unlike a grouped lax.conv, it stays fast under vmap and in
  the backward pass (grouped lax.conv: 10.7 s vs 0.65 s for 4 vmapped clients, fwd + bwd).
  """
  K, G = config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
  b, t, h = x.shape
  c = h // G
  v = p["weight_v"]  # [K, c_in, H]
  norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True))
  w = (p["weight_g"][:, None, None] / norm) * v
  w = w.reshape(K, c, G, c).transpose(2, 0, 1, 3).reshape(G, K * c, c)  # [G, (tap, c_in), c_out]
  xg = x.reshape(b, t, G, c).transpose(2, 0, 1, 3)  # [G, B, T, c]
  xp = jnp.pad(xg, ((0, 0), (0, 0), (K // 2, K // 2), (0, 0)))
  win = jnp.stack([xp[:, :, k:k + t] for k in range(K)], axis=3).reshape(G, b * t, K * c)
  y = jnp.einsum("gnj,gjo->gno", win, w).reshape(G, b, t, c).transpose(1, 2, 0, 3).reshape(b, t, h)
  return activation(config.feat_extract_activation)(y + p["bias"])


def attention(config: EncoderConfig, p: Params, x: jax.Array, key_mask: jax.Array | None):
  b, t, h = x.shape
  nh = config.num_attention_heads
  hd = h // nh
  q = dense(p["q_proj"], x).reshape(b, t, nh, hd) * (hd ** -0.5)
  k = dense(p["k_proj"], x).reshape(b, t, nh, hd)
  v = dense(p["v_proj"], x).reshape(b, t, nh, hd)
  scores = jnp.einsum("bqnd,bknd->bnqk", q, k)
  if key_mask is not None:
    scores = jnp.where(key_mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
  probs = jax.nn.softmax(scores, axis=-1)
  out = jnp.einsum("bnqk,bknd->bqnd", probs, v).reshape(b, t, h)
  return dense(p["out_proj"], out)


def feed_forward(config: EncoderConfig, p: Params, x: jax.Array) -> jax.Array:
  y = activation(config.hidden_act)(dense(p["intermediate_dense"], x))
  return dense(p["output_dense"], y)


def encoder_layer(config: EncoderConfig, p: Params, x: jax.Array, key_mask) -> jax.Array:
  eps = config.layer_norm_eps
  if config.do_stable_layer_norm:  # pre-LN (Large / LV-60)
    x = x + attention(config, p["attention"], layer_norm(p["layer_norm"], x, eps), key_mask)
    return x + feed_forward(config, p["feed_forward"], layer_norm(p["final_layer_norm"], x, eps))
  # post-LN (Base)
  x = layer_norm(p["layer_norm"], x + attention(config, p["attention"], x, key_mask), eps)
  return layer_norm(p["final_layer_norm"], x + feed_forward(config, p["feed_forward"], x), eps)


# ----------------------------------------------------------------------------- public API


def frame_lengths(config: EncoderConfig, num_samples: jax.Array) -> jax.Array:
  """Conv output length for each input length (transformers' _get_feat_extract_output_lengths)."""
  n = num_samples
  for k, s in zip(config.conv_kernel, config.conv_stride):
    n = (n - k) // s + 1
  return n


@_jit_config
def extract_features(config: EncoderConfig, params: Params, waveform: jax.Array,
                     attention_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Conv feature encoder: waveform [B, S] -> (features [B, T, conv_dim[-1]], frame_mask [B, T]).

  As in transformers the convolutions run over the whole padded waveform (group norm included);
  `attention_mask` only decides which frames are valid: the first frame_lengths(sum(mask)).
  """
  waveform = jnp.asarray(waveform, jnp.float32)
  if waveform.ndim != 2:
    raise ValueError(f"waveform must be [batch, samples], got shape {waveform.shape}")
  act = activation(config.feat_extract_activation)
  x = waveform[:, :, None]
  layers = params["feature_extractor"]["conv_layers"]
  for i, stride in enumerate(config.conv_stride):
    p = layers[str(i)]
    x = conv1d(p["conv"], x, stride)
    if config.feat_extract_norm == "layer":
      x = layer_norm(p["norm"], x, 1e-5)  # torch nn.LayerNorm default eps
    elif i == 0:
      x = layer_norm(p["norm"], x, 1e-5, axis=1)  # GroupNorm(C groups, C channels): per channel over time
    x = act(x)
  t = x.shape[1]
  if attention_mask is None:
    frame_mask = jnp.ones(x.shape[:2], bool)
  else:
    lengths = frame_lengths(config, jnp.sum(jnp.asarray(attention_mask).astype(jnp.int32), axis=-1))
    frame_mask = jnp.arange(t)[None, :] < lengths[:, None]
  return x, frame_mask


def _check_depth(config: EncoderConfig, depth: int | None) -> int:
  depth = config.num_hidden_layers if depth is None else depth
  if not isinstance(depth, (int, np.integer)) or not 1 <= depth <= config.num_hidden_layers:
    raise ValueError(f"depth must be an int in [1, {config.num_hidden_layers}], got {depth!r}")
  return int(depth)


@functools.partial(jax.jit, static_argnums=(0, 4), static_argnames=("config", "depth", "unroll"))
def encode_features(config: EncoderConfig, params: Params, features: jax.Array,
                    frame_mask: jax.Array | None = None, depth: int | None = None, *,
                    unroll: int | bool = 1, time_mask: jax.Array | None = None,
                    mask_embedding: jax.Array | None = None) -> jax.Array:
  """Feature projection + transformer to a static `depth`: -> hidden [depth, B, T, H].

  hidden[i] is the output of layer i+1, i.e. transformers' output_hidden_states[i + 1]. For the
  stable-layer-norm (pre-LN, Large) encoder the final encoder layer norm is applied to the last
  hidden state only when depth == num_hidden_layers: that is transformers' last_hidden_state and
  4.x's output_hidden_states[-1] (transformers 5 leaves hidden_states[-1] un-normalised, and only
  there differs from this). Shallower depths give the raw layer outputs, so for depth d < L,
  encode(depth=d) == encode()[:d]. The post-LN (Base) encoder has no such special case.

  `unroll` is lax.scan's: the same computation, with the loop unrolled (XLA's cost analysis counts
  a while-loop body once, so tests unroll to see the per-depth cost).

  `time_mask` [B, T] (bool) with `mask_embedding` [H]: masked-prediction pretraining. The projected
  features of masked frames are replaced by the embedding before the positional conv, where
  transformers' HubertModel applies `masked_spec_embed`.
  """
  depth = _check_depth(config, depth)
  eps = config.layer_norm_eps
  fp = params["feature_projection"]
  x = jnp.asarray(features, jnp.float32)
  if _has_feat_proj_layer_norm(config):
    x = layer_norm(fp["layer_norm"], x, eps)
  x = dense(fp["projection"], x)
  if (time_mask is None) != (mask_embedding is None):
    raise ValueError("time_mask and mask_embedding go together")
  if time_mask is not None:
    x = jnp.where(time_mask[..., None], mask_embedding.astype(x.dtype), x)

  enc = params["encoder"]
  if frame_mask is not None:
    x = jnp.where(frame_mask[..., None], x, 0.0)  # padded frames must not leak through the pos conv
  x = x + positional_conv(config, enc["pos_conv"], x)
  if not config.do_stable_layer_norm:
    x = layer_norm(enc["layer_norm"], x, eps)

  layers = enc["layers"]
  available = jax.tree.leaves(layers)[0].shape[0]
  if available < depth:
    raise ValueError(f"params hold {available} encoder layers, depth {depth} requested")
  layers = jax.tree.map(lambda w: w[:depth], layers)

  def step(h, p):
    h = encoder_layer(config, p, h, frame_mask)
    return h, h

  _, hidden = jax.lax.scan(step, x, layers, unroll=unroll)
  if config.do_stable_layer_norm and depth == config.num_hidden_layers:
    hidden = hidden.at[-1].set(layer_norm(enc["layer_norm"], hidden[-1], eps))
  return hidden


@_jit_config_depth
def encode(config: EncoderConfig, params: Params, waveform: jax.Array,
           attention_mask: jax.Array | None = None, depth: int | None = None) -> jax.Array:
  """waveform [B, S] (16 kHz) -> hidden [depth, B, T, H]; hidden[i] is transformers'
  output_hidden_states[i + 1] on the same input (see encode_features for the pre-LN last layer)."""
  features, frame_mask = extract_features(config, params, waveform, attention_mask)
  return encode_features(config, params, features,
                         None if attention_mask is None else frame_mask, depth)


def num_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
