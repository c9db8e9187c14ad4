"""Parity with transformers' own PyTorch HubertModel / Wav2Vec2Model: every layer's hidden state
within ATOL = 1e-5 (float32), for both encoder families, with and without a padded attention mask,
through the functional API and through the Flax modules. Each test prints the largest difference
it measured (`pytest -s` shows it).

The PyTorch models are randomly initialised from tiny configs (no downloads); every tensor is then
perturbed so that biases and norm scales are not at their trivial init (a transposed or swapped
bias would otherwise go unnoticed). The JAX params come from the converter, so this also tests it.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

from flax import nnx  # pylint: disable=g-import-not-at-top

from fedexit_jax.convert import convert_state_dict
from fedexit_jax.models import config as mconfig
from fedexit_jax.models import encode, modules, wav2vec2

ATOL = 1e-5  # what the README claims; float32 rounding differences are ~1e-6 here

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
            conv_dim=(16, 24, 24), conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2),
            num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4)
FAMILIES = {
    "group_postln": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
    "layer_stableln": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}


def torch_model(model_type: str, family: str, seed: int = 0, **overrides):
  cfg = mconfig.EncoderConfig(model_type=model_type, **{**TINY, **FAMILIES[family], **overrides})
  hf_kwargs = {k: v for k, v in cfg.to_hf_dict().items() if k != "model_type"}
  cls, cfg_cls = ((transformers.HubertModel, transformers.HubertConfig) if model_type == "hubert"
                  else (transformers.Wav2Vec2Model, transformers.Wav2Vec2Config))
  torch.manual_seed(seed)
  model = cls(cfg_cls(**hf_kwargs)).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return cfg, model


def close(name: str, got, want) -> float:
  """Asserts |got - want| <= ATOL everywhere and prints the largest difference."""
  got, want = np.asarray(got), np.asarray(want)
  assert got.shape == want.shape, (name, got.shape, want.shape)
  diff = float(np.max(np.abs(got - want)))
  print(f"{name}: max |jax - torch| = {diff:.2e}")
  assert diff <= ATOL, f"{name}: max |jax - torch| = {diff:.2e} > {ATOL:.0e}"
  return diff


def state_dict_numpy(model) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def reference_hidden(model, wave: np.ndarray, mask: np.ndarray | None):
  with torch.no_grad():
    out = model(torch.from_numpy(wave), attention_mask=None if mask is None else torch.from_numpy(mask),
                output_hidden_states=True)
  return [h.numpy() for h in out.hidden_states], out.last_hidden_state.numpy()


@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("model_type", ["hubert", "wav2vec2"])
def test_every_hidden_state_matches_transformers(model_type, family, padded):
  cfg, model = torch_model(model_type, family)
  params, ignored = convert_state_dict(state_dict_numpy(model), cfg)
  assert set(ignored) == {"masked_spec_embed"}  # present since mask_time_prob > 0 by default

  rng = np.random.default_rng(0)
  wave = rng.standard_normal((2, 4000)).astype(np.float32)
  mask = None
  if padded:
    mask = np.ones((2, 4000), np.int64)
    mask[1, 2600:] = 0
    wave[1, 2600:] = 0.0
  hs, last = reference_hidden(model, wave, mask)
  jmask = None if mask is None else jnp.asarray(mask)
  hidden = np.asarray(encode(cfg, params, jnp.asarray(wave), jmask))
  # the same params through the Flax module a user would hold
  module = nnx.merge(wav2vec2.graphdef(modules.Encoder, cfg), params)
  from_module = np.asarray(module(jnp.asarray(wave), jmask))
  L = cfg.num_hidden_layers
  assert hidden.shape == (L,) + hs[1].shape and len(hs) == L + 1
  tag = f"{model_type}/{family}/{'padded' if padded else 'full'}"
  for i in range(L - 1):
    close(f"{tag} layer {i + 1}", hidden[i], hs[i + 1])
    close(f"{tag} layer {i + 1} (module)", from_module[i], hs[i + 1])
  # Last layer: transformers' last_hidden_state (== output_hidden_states[-1] in transformers 4.x;
  # transformers 5 stopped applying the pre-LN encoder's final layer norm to hidden_states[-1]).
  close(f"{tag} last", hidden[L - 1], last)
  close(f"{tag} last (module)", from_module[L - 1], last)
  if not cfg.do_stable_layer_norm or int(transformers.__version__.split(".")[0]) < 5:
    close(f"{tag} layer {L}", hidden[L - 1], hs[L])


def test_hubert_without_feature_projection_layer_norm_and_odd_pos_kernel():
  # odd kernel: no SamePad frame removal
  cfg, model = torch_model("hubert", "group_postln", seed=2, feat_proj_layer_norm=False,
                           num_conv_pos_embeddings=5)
  params, _ = convert_state_dict(state_dict_numpy(model), cfg)
  assert "layer_norm" not in params["feature_projection"]
  wave = np.random.default_rng(2).standard_normal((1, 3000)).astype(np.float32)
  _, last = reference_hidden(model, wave, None)
  close("hubert no-proj-LN odd-K last", np.asarray(encode(cfg, params, jnp.asarray(wave)))[-1], last)


def test_shallow_depth_matches_transformers_prefix():
  cfg, model = torch_model("hubert", "layer_stableln", seed=1)
  params, _ = convert_state_dict(state_dict_numpy(model), cfg)
  wave = np.random.default_rng(1).standard_normal((1, 3000)).astype(np.float32)
  hs, _ = reference_hidden(model, wave, None)
  hidden = np.asarray(encode(cfg, params, jnp.asarray(wave), depth=2))
  for i in range(2):  # below full depth the pre-LN final layer norm is not applied
    close(f"depth-2 prefix layer {i + 1}", hidden[i], hs[i + 1])
