"""The wav2vec 2.0 / HuBERT encoder and its exit heads as Flax NNX modules.

  waveform -> FeatureEncoder (conv stack) -> FeatureProjection -> TransformerEncoder
              (PositionalConv, then a stack of EncoderLayer) -> hidden states -> ExitHeads

Use them as any Flax model (`SpeechEarlyExit(config, exits, num_classes, rngs=nnx.Rngs(0))`,
then `model(waveform, depth=6)`), or through the functional API (`wav2vec2.encode`,
`early_exit.exit_logits`), which binds a plain parameter dict to these modules.

Why NNX, and how the federated engine uses it. NNX is Flax's recommended API, and here it costs
the engine nothing: the engine keeps working on plain parameter dicts
(`nnx.to_pure_dict(nnx.state(m))`), which it slices per depth, masks, averages and checkpoints; a
module is rebuilt around such a dict by `nnx.merge` while a function is traced, so the compiled
program is the one hand-written functions gave (the encoder's outputs are bitwise equal to the
previous functional implementation's). Linen would serve as well (its `apply` takes the dict);
NNX wins on the user side: a model is an object you build, call and inspect, with no separate
`init`/`apply`.

Layout choices, and why:
- The encoder layers are ONE EncoderLayer whose every parameter has a leading layer axis (a
  scanned stack). Running to depth d is the static slice [:d] plus `lax.scan`, so a depth-3 client
  compiles (and costs) a quarter of a depth-12 one, and federated code masks or averages a layer
  as a row of one array per weight. A module bound to a dict with fewer rows (a depth-d client's
  slice) runs those rows.
- Convolutions are einsums over unfolded windows rather than `lax.conv`: a grouped `lax.conv`
  (the positional conv) is pathologically slow on CPU under `vmap` and in the backward pass.
- Activations are channel-last [B, T, C]; kernels are input-major ([in, out], [k, in, out]); the
  PyTorch -> JAX transposes live in fedexit_jax/convert.
- Parameter names are transformers' (q_proj, final_layer_norm, pos_conv.weight_v ...), so a
  module's state is exactly the tree the converter writes and orbax checkpoints hold (listed in
  fedexit_jax/models/wav2vec2.py).

Semantics follow transformers exactly (tests/test_parity_transformers.py): exact-erf GELU for
"gelu", SamePad drops the last positional-conv frame for even kernels, padded frames are zeroed
before the positional conv and masked out as attention keys.
"""
from __future__ import annotations

import contextvars
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fedexit_jax.models import heads as heads_lib
from fedexit_jax.models.config import EncoderConfig

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


_DEFER_NORMALS = contextvars.ContextVar("defer_normals", default=False)


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float) -> nnx.Param:
  """An N(0, std^2) parameter; under `init_fast` a placeholder that it fills."""
  if _DEFER_NORMALS.get():
    return nnx.Param(jnp.zeros(shape, jnp.float32), init_std=std)
  return nnx.Param(std * jax.random.normal(rngs.params(), shape, jnp.float32), init_std=std)


def init_fast(make: Callable[[nnx.Rngs], nnx.Module], rng: jax.Array) -> nnx.Module:
  """`make(rngs)`, with every N(0, std^2) parameter filled from ONE normal draw.

  The distributions are the modules' own; only the random stream differs. One draw per leaf
  makes a jitted init of the encoder take ~4 s to compile on the 2-core CPU, one draw ~1 s (it
  runs for every new model shape in tests and pretraining). Modules whose initial values derive
  from a normal parameter recompute them in `finish_init` (PositionalConv's weight_g)."""
  token = _DEFER_NORMALS.set(True)
  try:
    module = make(nnx.Rngs(0))
  finally:
    _DEFER_NORMALS.reset(token)
  normals = [v for _, v in nnx.iter_graph(module)
             if isinstance(v, nnx.Param) and v.get_metadata().get("init_std") is not None]
  flat = jax.random.normal(rng, (sum(math.prod(v.shape) for v in normals),), jnp.float32)
  offset = 0
  for v in normals:
    n = math.prod(v.shape)
    v[...] = v.get_metadata()["init_std"] * flat[offset:offset + n].reshape(v.shape)
    offset += n
  for _, node in nnx.iter_graph(module):
    if isinstance(node, nnx.Module) and hasattr(node, "finish_init"):
      node.finish_init()
  return module


def _zeros(shape: tuple[int, ...]) -> nnx.Param:
  return nnx.Param(jnp.zeros(shape, jnp.float32))


def unfold(x: jax.Array, kernel: int, stride: int) -> jax.Array:
  """[B, T, C] -> [B, T_out, kernel, C] windows of a valid strided convolution, built from
  `kernel` strided slices (cheap to differentiate and to vmap, unlike a gather or lax.conv)."""
  t_out = (x.shape[1] - kernel) // stride + 1
  if t_out < 1:
    raise ValueError(f"input of {x.shape[1]} frames is shorter than the conv kernel {kernel}")
  span = stride * (t_out - 1) + 1
  return jnp.stack([x[:, j:j + span:stride] for j in range(kernel)], axis=2)


# ----------------------------------------------------------------------------- building blocks


class LayerNorm(nnx.Module):
  """Normalises over `axis` (-1: a layer norm; 1 on [B, T, C]: transformers' GroupNorm with one
  group per channel, over time). `lead` stacks the parameters (one row per layer)."""

  def __init__(self, dim: int, eps: float, axis: int = -1, lead: tuple[int, ...] = ()):
    self.scale = nnx.Param(jnp.ones(lead + (dim,), jnp.float32))
    self.bias = _zeros(lead + (dim,))
    self.eps, self.axis = eps, axis

  def __call__(self, x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """valid (broadcastable to x, True = counts): statistics over the valid entries only."""
    if valid is None:
      mean = jnp.mean(x, axis=self.axis, keepdims=True)
      var = jnp.mean(jnp.square(x - mean), axis=self.axis, keepdims=True)
    else:
      m = jnp.broadcast_to(valid, x.shape).astype(x.dtype)
      count = jnp.maximum(jnp.sum(m, axis=self.axis, keepdims=True), 1.0)
      mean = jnp.sum(x * m, axis=self.axis, keepdims=True) / count
      var = jnp.sum(jnp.square(x - mean) * m, axis=self.axis, keepdims=True) / count
    return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]


class Dense(nnx.Module):
  """x @ kernel + bias; kernel N(0, 0.02^2) and zero bias, as transformers initialises Linear."""

  def __init__(self, d_in: int, d_out: int, *, rngs: nnx.Rngs, lead: tuple[int, ...] = ()):
    self.kernel = _normal(rngs, lead + (d_in, d_out), 0.02)
    self.bias = _zeros(lead + (d_out,))

  def __call__(self, x: jax.Array) -> jax.Array:
    return x @ self.kernel[...] + self.bias[...]


class Conv1D(nnx.Module):
  """Valid strided 1-D convolution [B, T, C_in] -> [B, T_out, C_out], kernel [k, C_in, C_out]
  (Kaiming-normal init, as transformers')."""

  def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, use_bias: bool, *,
               rngs: nnx.Rngs):
    self.kernel = _normal(rngs, (kernel, c_in, c_out), math.sqrt(2.0 / (c_in * kernel)))
    self.bias = _zeros((c_out,)) if use_bias else None
    self.stride = stride

  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel.shape[0]
    y = jnp.einsum("btkc,kco->bto", unfold(x, k, self.stride), self.kernel[...])
    return y if self.bias is None else y + self.bias[...]


# ----------------------------------------------------------------------------- the encoder


class ConvLayer(nnx.Module):
  """conv -> (layer norm | group norm on the first layer of a "group" stack | none) -> GELU."""

  def __init__(self, config: EncoderConfig, i: int, *, rngs: nnx.Rngs):
    c_in = 1 if i == 0 else config.conv_dim[i - 1]
    c_out = config.conv_dim[i]
    self.conv = Conv1D(c_in, c_out, config.conv_kernel[i], config.conv_stride[i],
                       config.conv_bias, rngs=rngs)
    if config.feat_extract_norm == "layer":
      self.norm = LayerNorm(c_out, 1e-5)  # torch nn.LayerNorm default eps
    elif i == 0:
      self.norm = LayerNorm(c_out, 1e-5, axis=1)  # GroupNorm(C groups, C channels)
    else:
      self.norm = None
    self.act = activation(config.feat_extract_activation)

  def __call__(self, x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """valid [B, T_out, 1]: the output frames the norm's statistics may read (None: all)."""
    x = self.conv(x)
    return self.act(x if self.norm is None else self.norm(x, valid))


def frame_lengths(config: EncoderConfig, num_samples: jax.Array) -> jax.Array:
  """Conv output length for each input length (transformers' _get_feat_extract_output_lengths)."""
  n = num_samples
  for k, s in zip(config.conv_kernel, config.conv_stride):
    n = (n - k) // s + 1
  return n


class FeatureEncoder(nnx.Module):
  """Waveform [B, S] -> (conv features [B, T, conv_dim[-1]], frame_mask [B, T]).

  As in transformers the convolutions run over the whole padded waveform (group norm included);
  `attention_mask` only decides which frames are valid: the first frame_lengths(sum(mask)).
  With `mask_group_norm` (and a mask) the first layer's group norm of a "group" stack takes its
  statistics over each utterance's valid frames only, so an utterance's features do not depend
  on how much padding it was batched with: equal to transformers on the unpadded utterance (the
  tasks with utterances of different lengths use it; keyword spotting's 1 s clips do not)."""

  def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.conv_layers = nnx.Dict({str(i): ConvLayer(config, i, rngs=rngs)
                                 for i in range(len(config.conv_dim))})

  def __call__(self, waveform: jax.Array, attention_mask: jax.Array | None = None,
               mask_group_norm: bool = False):
    waveform = jnp.asarray(waveform, jnp.float32)
    if waveform.ndim != 2:
      raise ValueError(f"waveform must be [batch, samples], got shape {waveform.shape}")
    x = waveform[:, :, None]
    samples = (None if attention_mask is None
               else jnp.sum(jnp.asarray(attention_mask).astype(jnp.int32), axis=-1))
    for i in range(len(self.config.conv_dim)):
      valid = None
      if (i == 0 and mask_group_norm and samples is not None
          and self.config.feat_extract_norm == "group"):
        k, s = self.config.conv_kernel[0], self.config.conv_stride[0]
        n_out = (waveform.shape[1] - k) // s + 1
        valid = (jnp.arange(n_out)[None, :] < ((samples - k) // s + 1)[:, None])[..., None]
      x = self.conv_layers[str(i)](x, valid)
    if attention_mask is None:
      return x, jnp.ones(x.shape[:2], bool)
    lengths = frame_lengths(self.config, samples)
    return x, jnp.arange(x.shape[1])[None, :] < lengths[:, None]


def has_feature_layer_norm(config: EncoderConfig) -> bool:
  """wav2vec2 always normalises the conv features; HuBERT only with feat_proj_layer_norm."""
  return config.model_type == "wav2vec2" or config.feat_proj_layer_norm


class FeatureProjection(nnx.Module):
  """(layer norm) -> linear: conv features [B, T, C] -> [B, T, H]."""

  def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
    c = config.conv_dim[-1]
    self.layer_norm = (LayerNorm(c, config.layer_norm_eps) if has_feature_layer_norm(config)
                       else None)
    self.projection = Dense(c, config.hidden_size, rngs=rngs)

  def __call__(self, features: jax.Array) -> jax.Array:
    x = jnp.asarray(features, jnp.float32)
    if self.layer_norm is not None:
      x = self.layer_norm(x)
    return self.projection(x)


class PositionalConv(nnx.Module):
  """Weight-normed grouped 'same' convolution + activation, [B, T, H] -> [B, T, H].

  PyTorch pads K//2 on both sides (T + 1 outputs for even K) and SamePad drops the last frame, so
  output t reads padded inputs t .. t+K-1 in both cases. weight = g * v / ||v||, the norm taken
  over (in, out) for each tap (torch weight_norm with dim=2); g and v stay the trained parameters.

  Computed as one batched GEMM over groups, [G, B*T, K*c] @ [G, K*c, c], on unfolded windows:
  with the group axis leading XLA:CPU runs it without transposes (4x faster than an einsum with
  the group axis in the middle) and, unlike a grouped lax.conv, it stays fast under vmap and in
  the backward pass (grouped lax.conv: 10.7 s vs 0.65 s for 4 vmapped clients, fwd + bwd).
  """

  def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
    K, G, h = config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups, config.hidden_size
    self.weight_v = _normal(rngs, (K, h // G, h), 2.0 / math.sqrt(K * h))  # as transformers
    self.weight_g = nnx.Param(jnp.zeros((K,), jnp.float32))
    self.bias = _zeros((h,))
    self.kernel_size, self.groups = K, G
    self.act = activation(config.feat_extract_activation)
    self.finish_init()

  def finish_init(self):
    """g = ||v|| per tap, so that the initial weight is v (torch weight_norm's init)."""
    self.weight_g[...] = jnp.sqrt(jnp.sum(jnp.square(self.weight_v[...]), axis=(1, 2)))

  def __call__(self, x: jax.Array) -> jax.Array:
    K, G = self.kernel_size, self.groups
    b, t, h = x.shape
    c = h // G
    v = self.weight_v[...]  # [K, c_in, H]
    norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True))
    w = (self.weight_g[...][:, None, None] / norm) * v
    w = w.reshape(K, c, G, c).transpose(2, 0, 1, 3).reshape(G, K * c, c)  # [G, (tap, c_in), c_out]
    xg = x.reshape(b, t, G, c).transpose(2, 0, 1, 3)  # [G, B, T, c]
    xp = jnp.pad(xg, ((0, 0), (0, 0), (K // 2, K // 2), (0, 0)))
    win = jnp.stack([xp[:, :, k:k + t] for k in range(K)], axis=3).reshape(G, b * t, K * c)
    y = jnp.einsum("gnj,gjo->gno", win, w).reshape(G, b, t, c).transpose(1, 2, 0, 3)
    return self.act(y.reshape(b, t, h) + self.bias[...])


class Attention(nnx.Module):
  """Multi-head self-attention; padded frames are masked out as keys."""

  def __init__(self, hidden: int, num_heads: int, *, rngs: nnx.Rngs, lead: tuple[int, ...] = ()):
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
      setattr(self, name, Dense(hidden, hidden, rngs=rngs, lead=lead))
    self.num_heads = num_heads

  def __call__(self, x: jax.Array, key_mask: jax.Array | None) -> jax.Array:
    b, t, h = x.shape
    nh = self.num_heads
    hd = h // nh
    q = self.q_proj(x).reshape(b, t, nh, hd) * (hd ** -0.5)
    k = self.k_proj(x).reshape(b, t, nh, hd)
    v = self.v_proj(x).reshape(b, t, nh, hd)
    scores = jnp.einsum("bqnd,bknd->bnqk", q, k)
    if key_mask is not None:
      scores = jnp.where(key_mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
    probs = jax.nn.softmax(scores, axis=-1)
    return self.out_proj(jnp.einsum("bnqk,bknd->bqnd", probs, v).reshape(b, t, h))


class FeedForward(nnx.Module):
  def __init__(self, hidden: int, inner: int, act: str, *, rngs: nnx.Rngs,
               lead: tuple[int, ...] = ()):
    self.intermediate_dense = Dense(hidden, inner, rngs=rngs, lead=lead)
    self.output_dense = Dense(inner, hidden, rngs=rngs, lead=lead)
    self.act = activation(act)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.output_dense(self.act(self.intermediate_dense(x)))


class EncoderLayer(nnx.Module):
  """One Transformer layer: post-LN (Base) or pre-LN (`do_stable_layer_norm`, Large).

  With `lead=(L,)` it holds the parameters of all L layers stacked (see TransformerEncoder); it
  is called on one row at a time."""

  def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs, lead: tuple[int, ...] = ()):
    h, eps = config.hidden_size, config.layer_norm_eps
    self.attention = Attention(h, config.num_attention_heads, rngs=rngs, lead=lead)
    self.layer_norm = LayerNorm(h, eps, lead=lead)
    self.feed_forward = FeedForward(h, config.intermediate_size, config.hidden_act, rngs=rngs,
                                    lead=lead)
    self.final_layer_norm = LayerNorm(h, eps, lead=lead)
    self.pre_ln = config.do_stable_layer_norm

  def __call__(self, x: jax.Array, key_mask: jax.Array | None) -> jax.Array:
    if self.pre_ln:
      x = x + self.attention(self.layer_norm(x), key_mask)
      return x + self.feed_forward(self.final_layer_norm(x))
    x = self.layer_norm(x + self.attention(x, key_mask))
    return self.final_layer_norm(x + self.feed_forward(x))


class TransformerEncoder(nnx.Module):
  """Projected features [B, T, H] -> hidden states [depth, B, T, H] of layers 1..depth."""

  def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.pos_conv = PositionalConv(config, rngs=rngs)
    self.layer_norm = LayerNorm(config.hidden_size, config.layer_norm_eps)
    self.layers = EncoderLayer(config, rngs=rngs, lead=(config.num_hidden_layers,))

  def __call__(self, x: jax.Array, frame_mask: jax.Array | None, depth: int, *,
               unroll: int | bool = 1) -> jax.Array:
    """hidden[i] is the output of layer i+1 (transformers' output_hidden_states[i + 1]). For the
    pre-LN encoder the final layer norm is applied to the last hidden state only when depth ==
    num_hidden_layers (transformers' last_hidden_state); shallower depths give raw layer outputs,
    so encode(depth=d) == encode()[:d] for d < L."""
    pre_ln = self.config.do_stable_layer_norm
    if frame_mask is not None:  # padded frames must not leak through the pos conv
      x = jnp.where(frame_mask[..., None], x, 0.0)
    x = x + self.pos_conv(x)
    if not pre_ln:
      x = self.layer_norm(x)
    graphdef, stacked = nnx.split(self.layers)
    available = jax.tree.leaves(stacked)[0].shape[0]
    if available < depth:
      raise ValueError(f"params hold {available} encoder layers, depth {depth} requested")
    rows = jax.tree.map(lambda w: w[:depth], stacked)

    def step(h, row):
      h = nnx.merge(graphdef, row)(h, frame_mask)
      return h, h

    _, hidden = jax.lax.scan(step, x, rows, unroll=unroll)
    if pre_ln and depth == self.config.num_hidden_layers:
      hidden = hidden.at[-1].set(self.layer_norm(hidden[-1]))
    return hidden


def check_depth(config: EncoderConfig, depth: int | None) -> int:
  depth = config.num_hidden_layers if depth is None else depth
  if not isinstance(depth, (int, np.integer)) or not 1 <= depth <= config.num_hidden_layers:
    raise ValueError(f"depth must be an int in [1, {config.num_hidden_layers}], got {depth!r}")
  return int(depth)


def project_and_encode(projection: FeatureProjection, encoder: TransformerEncoder,
                       features: jax.Array, frame_mask: jax.Array | None = None,
                       depth: int | None = None, *, unroll: int | bool = 1,
                       time_mask: jax.Array | None = None,
                       mask_embedding: jax.Array | None = None) -> jax.Array:
  """Conv features [B, T, C] -> hidden [depth, B, T, H].

  `unroll` is lax.scan's (the same computation; XLA's cost analysis counts a while-loop body
  once, so tests unroll to see the per-depth cost). `time_mask` [B, T] with `mask_embedding` [H]
  (masked-prediction pretraining): masked frames' projected features are replaced by the
  embedding before the positional conv, where HubertModel applies `masked_spec_embed`."""
  depth = check_depth(encoder.config, depth)
  x = projection(features)
  if (time_mask is None) != (mask_embedding is None):
    raise ValueError("time_mask and mask_embedding go together")
  if time_mask is not None:
    x = jnp.where(time_mask[..., None], mask_embedding.astype(x.dtype), x)
  return encoder(x, frame_mask, depth, unroll=unroll)


class Encoder(nnx.Module):
  """The whole backbone, waveform [B, S] (16 kHz) -> hidden states [depth, B, T, H].

  Its state is the converted-checkpoint tree: feature_extractor, feature_projection, encoder.
  """

  def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.feature_extractor = FeatureEncoder(config, rngs=rngs)
    self.feature_projection = FeatureProjection(config, rngs=rngs)
    self.encoder = TransformerEncoder(config, rngs=rngs)

  def encode_features(self, features: jax.Array, frame_mask: jax.Array | None = None,
                      depth: int | None = None, **kw) -> jax.Array:
    """Conv features -> hidden [depth, B, T, H] (see `project_and_encode` for the options)."""
    return project_and_encode(self.feature_projection, self.encoder, features, frame_mask, depth,
                              **kw)

  def __call__(self, waveform: jax.Array, attention_mask: jax.Array | None = None,
               depth: int | None = None) -> jax.Array:
    features, frame_mask = self.feature_extractor(waveform, attention_mask)
    return self.encode_features(features, None if attention_mask is None else frame_mask, depth)


# ----------------------------------------------------------------------------- exit heads


class ExitHeads(nnx.Module):
  """Statistics pooling over valid frames + one linear layer per exit (the paper's
  classification head), stacked: kernel [E, 2H, C], bias [E, C], so one einsum serves every exit.
  Kernels are N(0, 1/(2H)) (LeCun normal), so initial logits are O(1) whatever the width."""

  def __init__(self, hidden_size: int, num_classes: int, num_exits: int, *, rngs: nnx.Rngs):
    self.kernel = _normal(rngs, (num_exits, 2 * hidden_size, num_classes),
                          1.0 / math.sqrt(2 * hidden_size))
    self.bias = _zeros((num_exits, num_classes))

  def __call__(self, hidden: jax.Array, frame_mask: jax.Array | None) -> jax.Array:
    """hidden [n, B, T, H] -> logits [n, B, C] from the first n rows."""
    return heads_lib.apply_exit_heads({"kernel": self.kernel[...], "bias": self.bias[...]},
                                      heads_lib.stats_pool(hidden, frame_mask))


class FrameExitHeads(nnx.Module):
  """Per-frame exit heads for CTC (heads.apply_frame_heads), stacked over exits: a temporal conv
  conv_kernel [E, K, H, D] (+ conv_bias [E, D]) with GELU, with rnn_units > 0 a bidirectional
  GRU (gru_{fwd,bwd}_ih [E, D, 3U], _hh [E, U, 3U], _b [E, 3U], _bhn [E, U]), then out_kernel
  [E, D or 2U, V] (+ out_bias [E, V]). LeCun-normal kernels, so initial logits are O(1)."""

  def __init__(self, hidden_size: int, vocab_size: int, num_exits: int, *, width: int = 128,
               kernel: int = 3, rnn_units: int = 0, rngs: nnx.Rngs):
    self.conv_kernel = _normal(rngs, (num_exits, kernel, hidden_size, width),
                               1.0 / math.sqrt(kernel * hidden_size))
    self.conv_bias = _zeros((num_exits, width))
    names = ("conv_kernel", "conv_bias", "out_kernel", "out_bias")
    out_in = width
    if rnn_units:  # a bidirectional GRU after the convolution: gru_{fwd,bwd}_{ih,hh,b,bhn}
      for d in ("fwd", "bwd"):
        setattr(self, f"gru_{d}_ih", _normal(rngs, (num_exits, width, 3 * rnn_units),
                                             1.0 / math.sqrt(width)))
        setattr(self, f"gru_{d}_hh", _normal(rngs, (num_exits, rnn_units, 3 * rnn_units),
                                             1.0 / math.sqrt(rnn_units)))
        setattr(self, f"gru_{d}_b", _zeros((num_exits, 3 * rnn_units)))
        setattr(self, f"gru_{d}_bhn", _zeros((num_exits, rnn_units)))
        names += tuple(f"gru_{d}_{k}" for k in ("ih", "hh", "b", "bhn"))
      out_in = 2 * rnn_units
    self.out_kernel = _normal(rngs, (num_exits, out_in, vocab_size), 1.0 / math.sqrt(out_in))
    self.out_bias = _zeros((num_exits, vocab_size))
    self.names = names

  def __call__(self, hidden: jax.Array, frame_mask: jax.Array | None) -> jax.Array:
    """hidden [n, B, T, H] -> frame logits [n, B, T, V] from the first n rows."""
    return heads_lib.apply_frame_heads(
        {k: getattr(self, k)[...] for k in self.names}, hidden, frame_mask)


def make_heads(kind: str, hidden_size: int, num_outputs: int, num_exits: int, *,
               frame_kernel: int = 3, frame_rnn: int = 0,
               rngs: nnx.Rngs) -> ExitHeads | FrameExitHeads:
  """The stacked exit heads of a kind in heads.HEAD_KINDS (frame_kernel: the temporal-conv taps
  of "frames"; frame_rnn: its GRU's units per direction, 0 for none)."""
  if kind == "pooled":
    return ExitHeads(hidden_size, num_outputs, num_exits, rngs=rngs)
  if kind == "frames":
    return FrameExitHeads(hidden_size, num_outputs, num_exits, kernel=frame_kernel,
                          rnn_units=frame_rnn, rngs=rngs)
  raise ValueError(f"unknown head kind {kind!r}; choose one of {heads_lib.HEAD_KINDS}")


def active_exits(config: EncoderConfig, exits: Sequence[int], depth: int) -> tuple[int, ...]:
  """The exits a depth-`depth` forward pass reaches; validates exits and depth."""
  exits = tuple(int(e) for e in exits)
  L = config.num_hidden_layers
  if not exits or list(exits) != sorted(set(exits)) or exits[0] < 1 or exits[-1] > L:
    raise ValueError(f"exits must be strictly increasing layer numbers in [1, {L}], got {exits}")
  if not isinstance(depth, (int, np.integer)) or not 1 <= depth <= L:
    raise ValueError(f"depth must be an int in [1, {L}], got {depth!r}")
  active = tuple(e for e in exits if e <= depth)
  if not active:
    raise ValueError(f"depth {depth} is below the first exit {exits[0]}: no exit would be computed")
  return active


class SpeechEarlyExit(nnx.Module):
  """Encoder + exit heads: waveform -> logits of every exit at or below a depth.

    model = SpeechEarlyExit(config, exits=(3, 6, 9, 12), num_classes=12, rngs=nnx.Rngs(0))
    logits = model(waveform, depth=6)          # [2, B, 12]: exits 3 and 6
    hidden = model.backbone(waveform, depth=6)  # [6, B, T, H]

  head="frames" gives per-frame heads (FrameExitHeads, for CTC, with frame_kernel taps):
  num_classes is then the vocabulary and the call returns frame logits [n, B, T, V].

  Load pretrained weights with `fedexit_jax.convert.load_early_exit`.
  """

  def __init__(self, config: EncoderConfig, exits: Sequence[int], num_classes: int, *,
               head: str = "pooled", frame_kernel: int = 3, rngs: nnx.Rngs):
    self.exits = tuple(int(e) for e in exits)
    active_exits(config, self.exits, config.num_hidden_layers)  # validates
    self.backbone = Encoder(config, rngs=rngs)
    self.heads = make_heads(head, config.hidden_size, num_classes, len(self.exits),
                            frame_kernel=frame_kernel, rngs=rngs)

  def __call__(self, waveform: jax.Array, attention_mask: jax.Array | None = None,
               depth: int | None = None) -> jax.Array:
    config = self.backbone.config
    depth = check_depth(config, depth)
    active = active_exits(config, self.exits, depth)
    features, frame_mask = self.backbone.feature_extractor(waveform, attention_mask)
    fmask = None if attention_mask is None else frame_mask
    hidden = self.backbone.encode_features(features, fmask, max(active))
    return self.heads(hidden[np.asarray(active) - 1], fmask)
