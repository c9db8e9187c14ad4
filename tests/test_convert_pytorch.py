"""Checkpoint conversion: strict errors, fairseq and wrapper names, file formats, Hub offline path,
orbax round trip. Reference tensors come from tiny randomly initialised transformers models."""
from __future__ import annotations

import argparse
import json
import re
import sys
import time

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from fedexit_jax.convert import (CheckpointMismatchError, config_from_fairseq,  # pylint: disable=g-import-not-at-top
                                 config_from_hf_dict, convert_state_dict, load_converted,
                                 load_pytorch_checkpoint, save_converted)
from fedexit_jax.models import config as mconfig

TINY = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=4,
            num_conv_pos_embedding_groups=2)


def hf_config(**kw):
  return transformers.HubertConfig(**{**TINY, **kw})


@pytest.fixture(scope="module")
def hubert():
  torch.manual_seed(0)
  model = transformers.HubertModel(hf_config()).eval()
  sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
  cfg = config_from_hf_dict(model.config.to_dict())
  return model, sd, cfg


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_config_from_hf_dict_roundtrip(hubert):
  _, _, cfg = hubert
  assert cfg == mconfig.EncoderConfig(model_type="hubert", **TINY)


def test_params_tree_has_the_model_layout(hubert):
  _, sd, cfg = hubert
  params, _ = convert_state_dict(sd, cfg)
  from fedexit_jax.models import wav2vec2  # pylint: disable=import-outside-toplevel
  ref = jax.eval_shape(lambda: wav2vec2.init_params(cfg, jax.random.PRNGKey(0)))
  assert jax.tree.structure(params) == jax.tree.structure(ref)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(ref)):
    assert got.shape == want.shape and got.dtype == np.float32
  # explicit transposes: torch Linear [out, in] -> kernel [in, out]; layers stacked on axis 0
  np.testing.assert_array_equal(params["encoder"]["layers"]["feed_forward"]["intermediate_dense"]["kernel"][1],
                                sd["encoder.layers.1.feed_forward.intermediate_dense.weight"].T)
  np.testing.assert_array_equal(params["feature_extractor"]["conv_layers"]["1"]["conv"]["kernel"],
                                sd["feature_extractor.conv_layers.1.conv.weight"].transpose(2, 1, 0))


def test_every_problem_is_listed_in_one_error(hubert):
  _, sd, cfg = hubert
  bad = dict(sd)
  del bad["encoder.layers.1.attention.q_proj.bias"]
  del bad["feature_projection.projection.weight"]
  bad["encoder.layers.0.attention.k_proj.weight"] = np.zeros((16, 15), np.float32)
  bad["encoder.layers.2.attention.k_proj.weight"] = np.zeros((16, 16), np.float32)  # a 3rd layer
  bad["decoder.weight"] = np.zeros((3,), np.float32)
  with pytest.raises(CheckpointMismatchError) as err:
    convert_state_dict(bad, cfg)
  msg = str(err.value)
  assert "5 problem(s)" in msg
  assert "missing: 'encoder.layers.1.attention.q_proj.bias' expected shape (16,)" in msg
  assert "missing: 'feature_projection.projection.weight' expected shape (16, 8)" in msg
  assert "wrong shape: 'encoder.layers.0.attention.k_proj.weight' checkpoint (16, 15) vs expected (16, 16)" in msg
  assert "unexpected: 'encoder.layers.2.attention.k_proj.weight' shape (16, 16)" in msg
  assert "unexpected: 'decoder.weight' shape (3,)" in msg


def test_config_that_does_not_fit_the_checkpoint_is_reported(hubert):
  _, sd, cfg = hubert
  with pytest.raises(CheckpointMismatchError, match="wrong shape: 'encoder.pos_conv_embed"):
    convert_state_dict(sd, mconfig.EncoderConfig(**{**TINY, "num_conv_pos_embeddings": 6}))


def to_fairseq(sd: dict) -> dict:
  """transformers names -> fairseq names, written out independently of the converter's table."""
  out = {}
  for k, v in sd.items():
    k2 = k
    k2 = re.sub(r"conv_layers\.(\d+)\.conv\.", r"conv_layers.\1.0.", k2)
    k2 = re.sub(r"conv_layers\.(\d+)\.layer_norm\.", r"conv_layers.\1.2.", k2)
    k2 = k2.replace("feature_projection.projection.", "post_extract_proj.")
    k2 = k2.replace("feature_projection.layer_norm.", "layer_norm.")
    k2 = k2.replace("encoder.pos_conv_embed.conv.parametrizations.weight.original0", "encoder.pos_conv.0.weight_g")
    k2 = k2.replace("encoder.pos_conv_embed.conv.parametrizations.weight.original1", "encoder.pos_conv.0.weight_v")
    k2 = k2.replace("encoder.pos_conv_embed.conv.", "encoder.pos_conv.0.")
    k2 = re.sub(r"layers\.(\d+)\.attention\.", r"layers.\1.self_attn.", k2)
    k2 = re.sub(r"layers\.(\d+)\.layer_norm\.", r"layers.\1.self_attn_layer_norm.", k2)
    k2 = k2.replace("feed_forward.intermediate_dense.", "fc1.").replace("feed_forward.output_dense.", "fc2.")
    k2 = k2.replace("masked_spec_embed", "mask_emb")
    out[k2] = v
  return out


def test_fairseq_names_give_identical_params(hubert):
  _, sd, cfg = hubert
  ref, _ = convert_state_dict(sd, cfg)
  fs = to_fairseq(sd)
  assert "encoder.layers.0.self_attn.k_proj.weight" in fs and "post_extract_proj.weight" in fs
  fs["label_embs_concat"] = np.zeros((5, 4), np.float32)
  fs["final_proj.weight"] = np.zeros((4, 16), np.float32)
  params, ignored = convert_state_dict(fs, cfg)
  assert_trees_equal(params, ref)
  assert set(ignored) == {"mask_emb", "label_embs_concat", "final_proj.weight"}


def test_fairseq_layer_norm_extractor_names():
  torch.manual_seed(1)
  model = transformers.HubertModel(hf_config(feat_extract_norm="layer", conv_bias=True,
                                             do_stable_layer_norm=True))
  sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  cfg = config_from_hf_dict(model.config.to_dict())
  fs = {re.sub(r"conv_layers\.(\d+)\.2\.", r"conv_layers.\1.2.1.", k): v for k, v in to_fairseq(sd).items()}
  assert "feature_extractor.conv_layers.1.2.1.weight" in fs
  assert_trees_equal(convert_state_dict(fs, cfg)[0], convert_state_dict(sd, cfg)[0])


def test_wrappers_and_weight_norm_namings(hubert):
  _, sd, cfg = hubert
  ref, _ = convert_state_dict(sd, cfg)
  torch.manual_seed(0)
  clf = transformers.HubertForSequenceClassification(hf_config(num_labels=3, use_weighted_layer_sum=True))
  clf.hubert.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
  wrapped = {k: v.detach().numpy() for k, v in clf.state_dict().items()}
  assert "hubert.encoder.layers.0.attention.k_proj.weight" in wrapped
  params, ignored = convert_state_dict(wrapped, cfg)
  assert_trees_equal(params, ref)
  assert set(ignored) == {"hubert.masked_spec_embed", "projector.weight", "projector.bias",
                          "classifier.weight", "classifier.bias", "layer_weights"}
  # legacy weight-norm naming (weight_g / weight_v) maps to the same tensors
  legacy = {k.replace("parametrizations.weight.original0", "weight_g")
            .replace("parametrizations.weight.original1", "weight_v"): v for k, v in sd.items()}
  assert "encoder.pos_conv_embed.conv.weight_g" in legacy
  assert_trees_equal(convert_state_dict(legacy, cfg)[0], ref)
  # both namings at once is a duplicate, not a silent overwrite
  both = {**sd, "encoder.pos_conv_embed.conv.weight_g": sd["encoder.pos_conv_embed.conv.parametrizations.weight.original0"]}
  with pytest.raises(CheckpointMismatchError, match="duplicate"):
    convert_state_dict(both, cfg)


def test_ctc_wrapper_of_wav2vec2():
  torch.manual_seed(2)
  model = transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**TINY, vocab_size=7))
  sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  cfg = config_from_hf_dict(model.config.to_dict())
  assert cfg.model_type == "wav2vec2"
  _, ignored = convert_state_dict(sd, cfg)
  assert set(ignored) == {"wav2vec2.masked_spec_embed", "lm_head.weight", "lm_head.bias"}


def test_safetensors_folder_and_file(hubert, tmp_path):
  model, sd, cfg = hubert
  model.save_pretrained(tmp_path / "hf")
  assert (tmp_path / "hf" / "model.safetensors").exists()
  got_cfg, params = load_pytorch_checkpoint(tmp_path / "hf")
  assert got_cfg == cfg
  assert_trees_equal(params, convert_state_dict(sd, cfg)[0])
  # a single file: config.json beside it, or an explicit config
  got_cfg, params2 = load_pytorch_checkpoint(tmp_path / "hf" / "model.safetensors")
  assert got_cfg == cfg
  assert_trees_equal(params2, params)
  lone = tmp_path / "lone"
  lone.mkdir()
  (lone / "w.safetensors").write_bytes((tmp_path / "hf" / "model.safetensors").read_bytes())
  with pytest.raises(FileNotFoundError, match="config.json"):
    load_pytorch_checkpoint(lone / "w.safetensors")
  got_cfg, params3 = load_pytorch_checkpoint(lone / "w.safetensors", config=tmp_path / "hf" / "config.json")
  assert got_cfg == cfg
  assert_trees_equal(params3, params)


@pytest.mark.parametrize("legacy", [False, True])
def test_bin_folder(hubert, tmp_path, legacy):
  # legacy: the pre-1.6 non-zip format of old HF and fairseq files (no static scan possible),
  # read by the weights-only unpickler all the same
  model, sd, cfg = hubert
  folder = tmp_path / "bin"
  folder.mkdir()
  torch.save(model.state_dict(), folder / "pytorch_model.bin",
             _use_new_zipfile_serialization=not legacy)
  (folder / "config.json").write_text(json.dumps(model.config.to_dict()))
  got_cfg, params = load_pytorch_checkpoint(folder)
  assert got_cfg == cfg
  assert_trees_equal(params, convert_state_dict(sd, cfg)[0])


@pytest.mark.parametrize("style, legacy", [("hydra_cfg", False), ("legacy_args", False),
                                          ("legacy_args", True)])
def test_fairseq_pt_checkpoint(hubert, tmp_path, style, legacy):
  _, sd, cfg = hubert
  model_cfg = {"_name": "hubert", "extractor_mode": "default", "encoder_layers": 2,
               "encoder_embed_dim": 16, "encoder_ffn_embed_dim": 24, "encoder_attention_heads": 2,
               "activation_fn": "gelu", "layer_norm_first": False,
               "conv_feature_layers": "[(8, 10, 5)] + [(8, 3, 2)] * 1", "conv_bias": False,
               "conv_pos": 4, "conv_pos_groups": 2}
  state = {"model": {k: torch.from_numpy(v) for k, v in to_fairseq(sd).items()},
           "optimizer_history": [{"num_updates": 3}], "extra_state": {"epoch": 1}}
  if style == "hydra_cfg":
    state["cfg"] = {"model": model_cfg, "task": {"_name": "hubert_pretraining"}}
  else:
    state["args"] = argparse.Namespace(arch="hubert", **{k: v for k, v in model_cfg.items() if k != "_name"})
  torch.save(state, tmp_path / "checkpoint.pt", _use_new_zipfile_serialization=not legacy)
  got_cfg, params = load_pytorch_checkpoint(tmp_path / "checkpoint.pt")
  assert got_cfg == cfg
  assert_trees_equal(params, convert_state_dict(sd, cfg)[0])


def test_fairseq_task_state_objects_load_as_inert_placeholders(hubert, tmp_path, monkeypatch):
  """HuBERT's fairseq checkpoints pickle a fairseq Dictionary in task_state and numpy scalars in
  extra_state; they must load without fairseq installed and without running its code."""
  import types  # pylint: disable=import-outside-toplevel
  _, sd, cfg = hubert
  fake = types.ModuleType("fairseq.data.dictionary")

  class Dictionary:  # pickled by reference as fairseq.data.dictionary.Dictionary
    def __init__(self):
      self.symbols = ["<s>", "a"]
  Dictionary.__module__, Dictionary.__qualname__ = "fairseq.data.dictionary", "Dictionary"
  fake.Dictionary = Dictionary
  for name in ("fairseq", "fairseq.data"):
    monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
  monkeypatch.setitem(sys.modules, "fairseq.data.dictionary", fake)
  state = {"model": {k: torch.from_numpy(v) for k, v in to_fairseq(sd).items()},
           "cfg": {"model": {"_name": "hubert", "encoder_layers": 2, "encoder_embed_dim": 16,
                             "encoder_ffn_embed_dim": 24, "encoder_attention_heads": 2,
                             "conv_feature_layers": "[(8, 10, 5), (8, 3, 2)]", "conv_pos": 4,
                             "conv_pos_groups": 2}},
           "task_state": {"dictionaries": [Dictionary()]},
           "extra_state": {"best": np.float64(1.5)}}
  torch.save(state, tmp_path / "hubert.pt")
  for name in ("fairseq", "fairseq.data", "fairseq.data.dictionary"):  # as on a machine without fairseq
    monkeypatch.delitem(sys.modules, name)
  got_cfg, params = load_pytorch_checkpoint(tmp_path / "hubert.pt")
  assert got_cfg == cfg
  assert_trees_equal(params, convert_state_dict(sd, cfg)[0])


def test_fairseq_config_defaults_are_base():
  cfg = config_from_fairseq({"_name": "wav2vec2"})
  assert cfg == mconfig.base(model_type="wav2vec2")
  large = config_from_fairseq({"_name": "wav2vec2", "extractor_mode": "layer_norm", "layer_norm_first": True,
                               "conv_bias": True, "encoder_layers": 24, "encoder_embed_dim": 1024,
                               "encoder_ffn_embed_dim": 4096, "encoder_attention_heads": 16})
  assert large == mconfig.large(model_type="wav2vec2")


def test_unsafe_pickle_is_refused(tmp_path):
  import fractions  # pylint: disable=import-outside-toplevel
  # any class outside the allow-list (here a harmless stdlib one) must not be unpickled
  torch.save({"model": {}, "cfg": {"model": {}}, "x": fractions.Fraction(1, 3)}, tmp_path / "evil.pt")
  with pytest.raises(ValueError, match=r"refusing.*\['fractions.Fraction'\]"):
    load_pytorch_checkpoint(tmp_path / "evil.pt")


def test_missing_torch_is_a_clear_error(tmp_path, monkeypatch):
  (tmp_path / "w.bin").write_bytes(b"not read")
  monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
  with pytest.raises(ImportError, match="needs PyTorch"):
    load_pytorch_checkpoint(tmp_path / "w.bin", config=mconfig.EncoderConfig(**TINY))


def test_unsupported_configs_are_rejected():
  with pytest.raises(ValueError, match="model_type"):
    config_from_hf_dict({"model_type": "data2vec-audio"})
  with pytest.raises(ValueError, match="conv_pos_batch_norm"):
    config_from_hf_dict({"model_type": "hubert", "conv_pos_batch_norm": True})
  with pytest.raises(ValueError, match="conv_feature_layers"):
    config_from_fairseq({"conv_feature_layers": "[(512, 10, __import__('os'))]"})


def test_missing_path_and_offline_hub_fail_fast(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_pytorch_checkpoint(tmp_path / "nothing_here")
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # an empty cache
  start = time.monotonic()
  with pytest.raises(FileNotFoundError) as err:
    load_pytorch_checkpoint("facebook/hubert-base-ls960")
  assert time.monotonic() - start < 30  # generous bound: it must not wait on the network
  msg = str(err.value)
  assert "HF_HUB_OFFLINE" in msg and "hf download facebook/hubert-base-ls960" in msg and "--local-dir" in msg


def test_orbax_roundtrip(hubert, tmp_path):
  _, sd, cfg = hubert
  params, _ = convert_state_dict(sd, cfg)
  save_converted(tmp_path / "ckpt", cfg, params)
  with pytest.raises(FileExistsError):
    save_converted(tmp_path / "ckpt", cfg, params)
  got_cfg, got = load_converted(tmp_path / "ckpt")
  assert got_cfg == cfg
  assert_trees_equal(got, params)
