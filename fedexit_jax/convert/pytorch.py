"""PyTorch (transformers / fairseq) wav2vec2 and HuBERT checkpoints -> (EncoderConfig, params).

Conversion is a pure function on numpy dicts (convert_state_dict):
  1. canonical names: strip wrapper prefixes (`hubert.`, `wav2vec2.`, fairseq's
     `w2v_encoder.w2v_model.`), map torch's `parametrizations.weight.original0/1` to
     `weight_g/weight_v`, map fairseq names to transformers names (FAIRSEQ_RENAMES);
  2. tensors of known heads/pretraining modules the encoder does not use are set aside and
     reported (IGNORED_KNOWN, each with its reason) -- never silently;
  3. strict check against the shapes the config implies: every missing, unexpected, duplicated or
     wrongly shaped tensor is listed in ONE error, with both shapes;
  4. the rule table (RULES) places every tensor with an explicit transpose, stacking the
     transformer layers along a leading axis.

Loading: safetensors needs no torch. `.bin` and fairseq `.pt` need torch (imported lazily) and are
read with torch.load(weights_only=True); a file that does not read back (damaged, truncated, not
a checkpoint) or that the unpickler refuses is a CheckpointFileError naming it. Legacy (pre-1.6,
non-zip) torch files cannot be scanned ahead; they get the weights-only unpickler with the
allowed set below minus the fairseq placeholders, and only what it refuses is refused. Fairseq checkpoints pickle a few non-tensor objects; the
globals they name are checked BEFORE loading and only these are allowed (anything else is refused
with the list of names):
  - argparse.Namespace: the legacy `args` config (a plain attribute bag);
  - numpy scalar reconstruction (numpy scalar(), dtype and dtype classes): metric values in
    `extra_state` (the set torch's documentation gives for numpy scalars);
  - any `fairseq.*` class (e.g. fairseq.data.dictionary.Dictionary in HuBERT's `task_state`) is
    replaced by an inert placeholder (_FairseqPlaceholder) that only stores its pickled state:
    no fairseq code runs, and nothing of it is used (only `model` tensors and `cfg`/`args`).
"""
from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from fedexit_jax.models.config import EncoderConfig

log = logging.getLogger(__name__)

StateDict = Mapping[str, np.ndarray]

# --------------------------------------------------------------------------------------- names

WRAPPER_PREFIXES = ("hubert.", "wav2vec2.", "w2v_encoder.w2v_model.")

# fairseq name -> transformers name (applied after prefix stripping).
FAIRSEQ_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)$", r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)$", r"feature_extractor.conv_layers.\1.layer_norm.\2"),  # group norm
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)$", r"feature_extractor.conv_layers.\1.layer_norm.\2"),  # layer norm
    (r"^layer_norm\.(weight|bias)$", r"feature_projection.layer_norm.\1"),
    (r"^post_extract_proj\.(weight|bias)$", r"feature_projection.projection.\1"),
    (r"^encoder\.pos_conv\.0\.", r"encoder.pos_conv_embed.conv."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj|out_proj)\.", r"encoder.layers.\1.attention.\2."),
    (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"encoder.layers.\1.layer_norm."),
    (r"^encoder\.layers\.(\d+)\.fc1\.", r"encoder.layers.\1.feed_forward.intermediate_dense."),
    (r"^encoder\.layers\.(\d+)\.fc2\.", r"encoder.layers.\1.feed_forward.output_dense."),
)

# Tensors of wrappers and pretraining modules that the encoder does not use: reported, not kept.
IGNORED_KNOWN: tuple[tuple[str, str], ...] = (
    (r"^masked_spec_embed$", "SpecAugment mask embedding (training-time masking, not part of the forward pass)"),
    (r"^mask_emb$", "fairseq SpecAugment mask embedding"),
    (r"^(projector|classifier)\.", "task head of *ForSequenceClassification (replaced by exit heads)"),
    (r"^layer_weights$", "weighted layer sum of *ForSequenceClassification (replaced by exit heads)"),
    (r"^lm_head\.", "CTC output layer of *ForCTC"),
    (r"^w2v_encoder\.proj\.", "fairseq fine-tuning CTC output layer"),
    (r"^(quantizer|project_q|project_hid|final_proj|target_glu)\.", "pretraining quantizer / target projection"),
    (r"^label_embs_concat$", "HuBERT pretraining label embeddings"),
    (r"^pooling_layer\.", "fairseq audio-classification head"),
)

# --------------------------------------------------------------------------------------- rules

TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "copy": lambda x: x,
    "linear": lambda x: x.T,  # torch [out, in] -> [in, out]
    "conv": lambda x: x.transpose(2, 1, 0),  # torch [out, in, k] -> [k, in, out]
    "pos_g": lambda x: x.reshape(-1),  # weight_norm dim=2: [1, 1, K] -> [K]
    "pos_v": lambda x: x.transpose(2, 1, 0),  # [H, H/G, K] -> [K, H/G, H]
}

_LN = (("weight", "scale"), ("bias", "bias"))
_LIN = (("weight", "kernel", "linear"), ("bias", "bias", "copy"))

# (regex on the canonical name, JAX path ({n} = n-th group), transform, stacked over layers?)
RULES: tuple[tuple[str, tuple[str, ...], str, bool], ...] = (
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.weight", ("feature_extractor", "conv_layers", "{0}", "conv", "kernel"), "conv", False),
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.bias", ("feature_extractor", "conv_layers", "{0}", "conv", "bias"), "copy", False),
    *((rf"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.{t}", ("feature_extractor", "conv_layers", "{0}", "norm", j), "copy", False) for t, j in _LN),
    *((rf"feature_projection\.layer_norm\.{t}", ("feature_projection", "layer_norm", j), "copy", False) for t, j in _LN),
    *((rf"feature_projection\.projection\.{t}", ("feature_projection", "projection", j), f, False) for t, j, f in _LIN),
    (r"encoder\.pos_conv_embed\.conv\.weight_g", ("encoder", "pos_conv", "weight_g"), "pos_g", False),
    (r"encoder\.pos_conv_embed\.conv\.weight_v", ("encoder", "pos_conv", "weight_v"), "pos_v", False),
    (r"encoder\.pos_conv_embed\.conv\.bias", ("encoder", "pos_conv", "bias"), "copy", False),
    *((rf"encoder\.layer_norm\.{t}", ("encoder", "layer_norm", j), "copy", False) for t, j in _LN),
    *((rf"encoder\.layers\.(\d+)\.attention\.(q_proj|k_proj|v_proj|out_proj)\.{t}", ("encoder", "layers", "attention", "{1}", j), f, True) for t, j, f in _LIN),
    *((rf"encoder\.layers\.(\d+)\.(layer_norm|final_layer_norm)\.{t}", ("encoder", "layers", "{1}", j), "copy", True) for t, j in _LN),
    *((rf"encoder\.layers\.(\d+)\.feed_forward\.(intermediate_dense|output_dense)\.{t}", ("encoder", "layers", "feed_forward", "{1}", j), f, True) for t, j, f in _LIN),
)


def expected_shapes(config: EncoderConfig) -> dict[str, tuple[int, ...]]:
  """Canonical (transformers) tensor names and their PyTorch shapes for `config`."""
  c = config
  h, inter, K, G = c.hidden_size, c.intermediate_size, c.num_conv_pos_embeddings, c.num_conv_pos_embedding_groups
  s: dict[str, tuple[int, ...]] = {}
  c_in = 1
  for i, (c_out, k) in enumerate(zip(c.conv_dim, c.conv_kernel)):
    p = f"feature_extractor.conv_layers.{i}."
    s[p + "conv.weight"] = (c_out, c_in, k)
    if c.conv_bias:
      s[p + "conv.bias"] = (c_out,)
    if c.feat_extract_norm == "layer" or i == 0:
      s[p + "layer_norm.weight"] = s[p + "layer_norm.bias"] = (c_out,)
    c_in = c_out
  if c.model_type == "wav2vec2" or c.feat_proj_layer_norm:
    s["feature_projection.layer_norm.weight"] = s["feature_projection.layer_norm.bias"] = (c_in,)
  s["feature_projection.projection.weight"] = (h, c_in)
  s["feature_projection.projection.bias"] = (h,)
  s["encoder.pos_conv_embed.conv.weight_g"] = (1, 1, K)
  s["encoder.pos_conv_embed.conv.weight_v"] = (h, h // G, K)
  s["encoder.pos_conv_embed.conv.bias"] = (h,)
  s["encoder.layer_norm.weight"] = s["encoder.layer_norm.bias"] = (h,)
  for l in range(c.num_hidden_layers):
    p = f"encoder.layers.{l}."
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
      s[p + f"attention.{proj}.weight"] = (h, h)
      s[p + f"attention.{proj}.bias"] = (h,)
    for ln in ("layer_norm", "final_layer_norm"):
      s[p + f"{ln}.weight"] = s[p + f"{ln}.bias"] = (h,)
    s[p + "feed_forward.intermediate_dense.weight"] = (inter, h)
    s[p + "feed_forward.intermediate_dense.bias"] = (inter,)
    s[p + "feed_forward.output_dense.weight"] = (h, inter)
    s[p + "feed_forward.output_dense.bias"] = (h,)
  return s


def canonical_name(name: str) -> str:
  """transformers name of a (possibly wrapped, possibly fairseq) checkpoint tensor name."""
  for prefix in WRAPPER_PREFIXES:
    if name.startswith(prefix):
      name = name[len(prefix):]
      break
  name = name.replace("parametrizations.weight.original0", "weight_g")
  name = name.replace("parametrizations.weight.original1", "weight_v")
  for pattern, repl in FAIRSEQ_RENAMES:
    name, n = re.subn(pattern, repl, name)
    if n:
      break
  return name


def _ignored_reason(name: str) -> str | None:
  for pattern, reason in IGNORED_KNOWN:
    if re.search(pattern, name):
      return reason
  return None


class CheckpointMismatchError(ValueError):
  """A checkpoint does not fit the config: lists every missing, unexpected and misshapen tensor."""


def convert_state_dict(state_dict: StateDict, config: EncoderConfig
                       ) -> tuple[dict[str, Any], dict[str, str]]:
  """Pure conversion of a name -> array dict into the params pytree of fedexit_jax.models.

  Returns (params as float32 numpy arrays, ignored {original name: reason}). Raises
  CheckpointMismatchError naming every missing / unexpected / duplicated / wrongly shaped tensor.
  """
  expected = expected_shapes(config)
  canonical: dict[str, np.ndarray] = {}
  origin: dict[str, str] = {}
  ignored: dict[str, str] = {}
  problems: list[str] = []
  for name, value in state_dict.items():
    canon = canonical_name(name)
    reason = _ignored_reason(canon) if canon not in expected else None
    if reason is not None:
      ignored[name] = reason
      continue
    if canon in canonical:
      problems.append(f"duplicate: {name!r} and {origin[canon]!r} both map to {canon!r}")
      continue
    canonical[canon] = np.asarray(value)
    origin[canon] = name

  for canon in sorted(set(expected) - set(canonical)):
    problems.append(f"missing: {canon!r} expected shape {expected[canon]}")
  for canon in sorted(set(canonical) - set(expected)):
    problems.append(f"unexpected: {origin[canon]!r} shape {tuple(canonical[canon].shape)}")
  for canon in sorted(set(canonical) & set(expected)):
    got = tuple(canonical[canon].shape)
    if got != expected[canon]:
      problems.append(f"wrong shape: {origin[canon]!r} checkpoint {got} vs expected {expected[canon]}")
  if problems:
    raise CheckpointMismatchError(
        f"checkpoint does not match the {config.model_type} config "
        f"({config.num_hidden_layers} layers, hidden {config.hidden_size}); "
        f"{len(problems)} problem(s):\n  " + "\n  ".join(problems))

  params: dict[str, Any] = {}
  stacked: dict[tuple[str, ...], dict[int, np.ndarray]] = {}
  for canon, value in canonical.items():
    for pattern, path, transform, is_stacked in RULES:
      m = re.fullmatch(pattern, canon)
      if m is None:
        continue
      groups = m.groups()
      key = tuple(part.format(*groups) for part in path)
      value = TRANSFORMS[transform](_to_float32(value))
      if is_stacked:
        stacked.setdefault(key, {})[int(groups[0])] = value
      else:
        _set(params, key, np.ascontiguousarray(value))
      break
    else:  # an expected name without a rule is a bug in this module, not in the checkpoint
      raise AssertionError(f"no conversion rule for {canon!r}")
  for key, per_layer in stacked.items():
    _set(params, key, np.stack([per_layer[l] for l in range(config.num_hidden_layers)]))
  if ignored:
    log.warning("ignored %d checkpoint tensor(s) the encoder does not use: %s", len(ignored),
                "; ".join(f"{k} ({v})" for k, v in sorted(ignored.items())))
  return params, ignored


def _to_float32(x: np.ndarray) -> np.ndarray:
  return np.asarray(x, dtype=np.float32)


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for part in path[:-1]:
    tree = tree.setdefault(part, {})
  tree[path[-1]] = value


# --------------------------------------------------------------------------------------- configs

_UNSUPPORTED_HF = {
    "conv_pos_batch_norm": lambda v: bool(v),
    "adapter_attn_dim": lambda v: v is not None,
    "add_adapter": lambda v: bool(v),
    "num_conv_pos_embedding_layers": lambda v: v not in (None, 1),
}


def config_from_hf_dict(d: Mapping[str, Any]) -> EncoderConfig:
  """EncoderConfig from a transformers config.json dict; rejects model types and options this
  encoder does not implement rather than ignoring them."""
  model_type = d.get("model_type")
  if model_type not in ("hubert", "wav2vec2"):
    raise ValueError(f"unsupported model_type {model_type!r} in config.json; expected 'hubert' or 'wav2vec2'")
  bad = [k for k, is_bad in _UNSUPPORTED_HF.items() if k in d and is_bad(d[k])]
  if bad:
    raise ValueError(f"config.json uses options this encoder does not implement: "
                     f"{ {k: d[k] for k in bad} }")
  return EncoderConfig.from_hf_dict(d)


def _parse_conv_layers(spec: str) -> list[tuple[int, int, int]]:
  """fairseq's conv_feature_layers string, e.g. "[(512, 10, 5)] + [(512, 3, 2)] * 4", evaluated
  without eval(): only list/tuple literals of ints, + and * are allowed."""
  def ev(node):
    if isinstance(node, ast.Expression):
      return ev(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
      return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
      items = [ev(e) for e in node.elts]
      return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
      left, right = ev(node.left), ev(node.right)
      return left + right if isinstance(node.op, ast.Add) else left * right
    raise ValueError(f"unsupported expression in conv_feature_layers: {spec!r}")
  layers = ev(ast.parse(spec, mode="eval"))
  if not isinstance(layers, list) or not all(isinstance(t, tuple) and len(t) == 3 for t in layers):
    raise ValueError(f"conv_feature_layers must be a list of (dim, kernel, stride), got {spec!r}")
  return layers


def config_from_fairseq(cfg: Mapping[str, Any] | argparse.Namespace, model_type: str | None = None
                        ) -> EncoderConfig:
  """EncoderConfig from a fairseq model cfg (hydra dict `cfg["model"]` or legacy `args`); missing
  keys take fairseq's defaults."""
  d = dict(vars(cfg)) if isinstance(cfg, argparse.Namespace) else dict(cfg)
  if "w2v_args" in d and d["w2v_args"]:  # fine-tuned checkpoint: the encoder's own config
    inner = d["w2v_args"]
    inner = dict(vars(inner)) if isinstance(inner, argparse.Namespace) else dict(inner)
    d = dict(inner.get("model", inner))
    d = dict(vars(d)) if isinstance(d, argparse.Namespace) else d
  name = model_type or d.get("_name") or d.get("arch") or "wav2vec2"
  name = "hubert" if "hubert" in str(name) else "wav2vec2"
  if d.get("pos_conv_depth", 1) != 1 or d.get("conv_pos_batch_norm", False):
    raise ValueError("fairseq checkpoint uses a multi-layer or batch-normed positional conv "
                     "(data2vec-style), which this encoder does not implement")
  conv = _parse_conv_layers(d.get("conv_feature_layers", "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2"))
  mode = d.get("extractor_mode", "default")
  if mode not in ("default", "layer_norm"):
    raise ValueError(f"unsupported fairseq extractor_mode {mode!r}")
  return EncoderConfig(
      model_type=name,
      hidden_size=d.get("encoder_embed_dim", 768),
      num_hidden_layers=d.get("encoder_layers", 12),
      num_attention_heads=d.get("encoder_attention_heads", 12),
      intermediate_size=d.get("encoder_ffn_embed_dim", 3072),
      hidden_act=d.get("activation_fn", "gelu"),
      conv_dim=tuple(t[0] for t in conv), conv_kernel=tuple(t[1] for t in conv),
      conv_stride=tuple(t[2] for t in conv), conv_bias=bool(d.get("conv_bias", False)),
      feat_extract_norm="group" if mode == "default" else "layer",
      feat_proj_layer_norm=True,  # fairseq always layer-norms the conv features
      do_stable_layer_norm=bool(d.get("layer_norm_first", False)),
      num_conv_pos_embeddings=d.get("conv_pos", 128),
      num_conv_pos_embedding_groups=d.get("conv_pos_groups", 16))


# --------------------------------------------------------------------------------------- files

class _FairseqPlaceholder:
  """Stands in for a fairseq class named in a checkpoint; inert: it only keeps the pickled state."""

  def __new__(cls, *args, **kwargs):  # pylint: disable=unused-argument
    return super().__new__(cls)

  def __init__(self, *args, **kwargs):  # called when the pickle REDUCEs the class itself
    self.args, self.kwargs = args, kwargs

  def __setstate__(self, state):
    self.state = state


class CheckpointFileError(ValueError):
  """A weights file that cannot be read: damaged, not a checkpoint, or refused by the unpickler."""


def _allowed_global(name: str) -> list[Any] | None:
  """What the weights-only unpickler may build for global `name`, or None to refuse."""
  if name == "argparse.Namespace":
    return [argparse.Namespace]
  if name.startswith("fairseq."):
    return [(_FairseqPlaceholder, name)]
  if name in ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"):
    try:
      from numpy._core.multiarray import scalar  # pylint: disable=import-outside-toplevel
    except ImportError:  # numpy < 2
      from numpy.core.multiarray import scalar  # pylint: disable=import-outside-toplevel
    return [(scalar, name)]
  if name == "numpy.dtype":  # a dtype is rebuilt as an instance of its dtype class (Float64DType...)
    dtypes = getattr(np, "dtypes", None)
    classes = [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")] if dtypes else []
    return [np.dtype, *classes]
  return None


def _torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("reading .bin/.pt checkpoints needs PyTorch: pip install 'fedexit_jax[convert]' "
                      "(or convert the checkpoint to safetensors, which loads without torch)") from e
  return torch


def _torch_load(path: Path) -> Any:
  """torch.load with the weights-only unpickler (a checkpoint is untrusted input), allowing only
  the extra globals of _allowed_global, and only those this checkpoint names."""
  torch = _torch()
  if zipfile.is_zipfile(path):
    needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
  else:  # legacy format: no static scan; the unpickler itself checks every global
    needed = ["argparse.Namespace", "numpy.core.multiarray.scalar",
              "numpy._core.multiarray.scalar", "numpy.dtype"]
  allowed = {name: _allowed_global(name) for name in needed}
  refused = sorted(name for name, objs in allowed.items() if objs is None)
  if refused:
    raise CheckpointFileError(
        f"{path}: the checkpoint pickles objects outside the allowed set (tensors, builtins, "
        f"argparse.Namespace, numpy scalars, inert fairseq placeholders); refusing to unpickle "
        f"it. Disallowed globals: {refused}")
  with torch.serialization.safe_globals([obj for objs in allowed.values() for obj in objs]):
    try:
      return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # something the static scan could not see
      raise CheckpointFileError(f"{path}: the weights-only unpickler refused this checkpoint: "
                                f"{_unpickler_reason(e)}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:  # damaged or not a torch file
      raise CheckpointFileError(f"{path}: not a readable PyTorch checkpoint "
                                f"({type(e).__name__}: {_one_line(e)})") from None


def _unpickler_reason(e: BaseException) -> str:
  """torch's refusal without its boilerplate (which suggests weights_only=False: never here)."""
  parts = [p for p in str(e).split("\n\n") if p.strip() and not p.strip().startswith(
      ("Weights only load failed", "Check the documentation"))]
  return _one_line("; ".join(parts) if parts else e)


def _one_line(e: BaseException | str, limit: int = 300) -> str:
  text = " ".join(str(e).split())
  return text if len(text) <= limit else text[:limit] + "..."


def _tensors_to_numpy(sd: Mapping[str, Any]) -> dict[str, np.ndarray]:
  out = {}
  for k, v in sd.items():
    if hasattr(v, "detach"):  # torch tensor; bf16/fp16 go through float32 (numpy has no bf16)
      v = v.detach().cpu()
      out[k] = (v.float() if v.is_floating_point() else v).numpy()
    else:
      out[k] = np.asarray(v)
  return out


def load_state_dict_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], Any]:
  """Reads one weights file: (name -> numpy array, fairseq model cfg or None)."""
  path = Path(path)
  if path.suffix == ".safetensors":
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    try:
      return dict(load_file(str(path))), None
    except Exception as e:  # pylint: disable=broad-except  # SafetensorError is not importable
      raise CheckpointFileError(f"{path}: not a readable safetensors file "
                                f"({type(e).__name__}: {_one_line(e)})") from None
  if path.suffix not in (".bin", ".pt", ".pth"):
    raise ValueError(f"{path}: unknown checkpoint format {path.suffix!r}; expected .safetensors, .bin or .pt")
  obj = _torch_load(path)
  if isinstance(obj, dict) and isinstance(obj.get("model"), dict) and ("cfg" in obj or "args" in obj):
    cfg = obj.get("cfg")
    cfg = cfg["model"] if isinstance(cfg, dict) and cfg.get("model") is not None else obj.get("args")
    if cfg is None:
      raise ValueError(f"{path}: fairseq checkpoint without a model cfg or args")
    return _tensors_to_numpy(obj["model"]), cfg
  if not isinstance(obj, dict):
    raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
  return _tensors_to_numpy(obj), None


def check_weights_files(path: str | os.PathLike) -> None:
  """CheckpointFileError if a safetensors file of `path` (a file or a HF folder) has a header that
  does not read back or does not cover the file: a cheap check, the header only."""
  p = Path(path)
  files = _weights_in_folder(p) if p.is_dir() else [p]
  for f in files:
    if f.suffix == ".safetensors":
      from safetensors import safe_open  # pylint: disable=import-outside-toplevel
      try:
        with safe_open(str(f), "np"):
          pass
      except Exception as e:  # pylint: disable=broad-except
        raise CheckpointFileError(f"{f}: not a readable safetensors file "
                                  f"({type(e).__name__}: {_one_line(e)})") from None


def _weights_in_folder(folder: Path) -> list[Path]:
  for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
    if (folder / index_name).exists():
      index = json.loads((folder / index_name).read_text())
      return [folder / f for f in sorted(set(index["weight_map"].values()))]
  for name in ("model.safetensors", "pytorch_model.bin"):
    if (folder / name).exists():
      return [folder / name]
  raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin (nor a sharded index)")


def _resolve_config(config: EncoderConfig | Mapping | str | os.PathLike | None, near: Path,
                    fairseq_cfg: Any) -> EncoderConfig:
  if isinstance(config, EncoderConfig):
    return config
  if isinstance(config, Mapping):
    return config_from_hf_dict(config)
  if config is not None:
    return config_from_hf_dict(json.loads(Path(config).read_text()))
  if fairseq_cfg is not None:
    return config_from_fairseq(fairseq_cfg)
  candidate = near / "config.json"
  if candidate.exists():
    return config_from_hf_dict(json.loads(candidate.read_text()))
  raise FileNotFoundError(f"no config for the weights in {near}: put the model's config.json next to "
                          f"them or pass config= (an EncoderConfig, a config.json dict or path)")


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(name: str) -> bool:
  """"owner/name" that is not a path on disk: a Hugging Face Hub id."""
  return bool(_HUB_ID.match(name)) and not name.startswith((".", "/"))


def _hub_offline() -> bool:
  return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def download_from_hub(repo_id: str) -> Path:
  """snapshot_download of config + weights; offline or unreachable -> a fast, explicit error."""
  how = (f"download it where there is network, e.g. `hf download {repo_id} config.json "
         f"model.safetensors --local-dir <folder>` (or pytorch_model.bin if the repo has no "
         f"safetensors), copy <folder> to this machine and pass its path to load_pytorch_checkpoint")
  try:
    from huggingface_hub import snapshot_download  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"{repo_id!r} looks like a Hub id but huggingface_hub is not installed; {how}") from e
  patterns = ["config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]
  try:
    if _hub_offline():  # the cache may still hold it; never touches the network
      folder = Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    else:
      folder = Path(snapshot_download(repo_id, allow_patterns=patterns, etag_timeout=10))
      if not any(folder.glob("*.safetensors")):
        folder = Path(snapshot_download(repo_id, allow_patterns=["config.json", "pytorch_model.bin"],
                                        etag_timeout=10))
  except Exception as e:  # offline cache miss, DNS/connection errors, unknown repo ...
    state = "HF_HUB_OFFLINE is set" if _hub_offline() else "the Hub is unreachable or refused"
    raise FileNotFoundError(f"cannot fetch {repo_id!r} ({state}: {type(e).__name__}: {e}). To use it, {how}.") from e
  return folder


def load_pytorch_checkpoint(path: str | os.PathLike,
                            config: EncoderConfig | Mapping | str | os.PathLike | None = None
                            ) -> tuple[EncoderConfig, dict[str, Any]]:
  """(config, params) from a transformers folder (config.json + model.safetensors or
  pytorch_model.bin, sharded too), a single .safetensors/.bin file (config from `config` or a
  config.json beside it), a fairseq .pt (config from its cfg/args unless `config` is given), or a
  Hub id such as "facebook/hubert-base-ls960". Params are float32 jax arrays; tensors of known
  heads are logged as ignored (see convert_state_dict)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  p = Path(path)
  if not p.exists():
    if looks_like_hub_id(str(path)):
      p = download_from_hub(str(path))
    else:
      raise FileNotFoundError(f"checkpoint {path} does not exist")
  files = _weights_in_folder(p) if p.is_dir() else [p]
  state_dict: dict[str, np.ndarray] = {}
  fairseq_cfg = None
  for f in files:
    sd, fairseq_cfg = load_state_dict_file(f)
    state_dict.update(sd)
  cfg = _resolve_config(config, p if p.is_dir() else p.parent, fairseq_cfg)
  params, _ = convert_state_dict(state_dict, cfg)
  import jax  # pylint: disable=import-outside-toplevel
  return cfg, jax.tree.map(jnp.asarray, params)
