"""HuBERT-style pretraining: the masked-frame mechanics, the targets, the loss at a hand-known
point, a short real pretraining run, the CLI, and the built-in checkpoint the default run loads."""
from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedexit_jax import cli, pipeline, pretrain
from fedexit_jax.convert import saved
from fedexit_jax.models import config as mconfig
from fedexit_jax.models import wav2vec2
from tests.test_data_speech_commands import make_mini_folder

TINY = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4)
SPEC = pretrain.PretrainSpec(exits=(2, 4), num_clusters=8, steps=40, batch_size=8,
                             learning_rate=3e-3, warmup_steps=5)


def _tones(n=24, seconds=0.5, seed=0):
  """Clips of one of three tones: frames of a clip share a timbre a model can learn."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(16000 * seconds)) / 16000
  f = rng.choice([300.0, 900.0, 2500.0], size=n)
  return (0.3 * np.sin(2 * np.pi * f[:, None] * t) + 0.01 * rng.standard_normal((n, t.size))
          ).astype(np.float32)


def test_span_mask_covers_each_start_and_the_next_span_minus_one_frames():
  rng = jax.random.PRNGKey(3)
  mask = np.asarray(pretrain.span_mask(rng, (4, 30), 0.1, 3))
  starts = np.asarray(jax.random.bernoulli(rng, 0.1, (4, 30)))
  want = np.zeros_like(starts)
  for b, t in zip(*np.nonzero(starts)):
    want[b, t:t + 3] = True
  np.testing.assert_array_equal(mask, want)
  assert starts.any()


def test_masked_frames_take_the_mask_embedding_and_nothing_else_changes():
  cfg = mconfig.EncoderConfig(**TINY)
  params = wav2vec2.init_params(cfg, jax.random.PRNGKey(0))
  feats = jax.random.normal(jax.random.PRNGKey(1), (2, 20, 16))
  plain = wav2vec2.encode_features(cfg, params, feats, None, 2)
  none = jnp.zeros((2, 20), bool)
  emb = jnp.ones((32,))
  same = wav2vec2.encode_features(cfg, params, feats, None, 2, time_mask=none, mask_embedding=emb)
  np.testing.assert_allclose(same, plain, atol=1e-6)
  masked = wav2vec2.encode_features(cfg, params, feats, None, 2,
                                    time_mask=none.at[0, 5].set(True), mask_embedding=emb)
  assert not np.allclose(masked[:, 0], plain[:, 0])
  np.testing.assert_allclose(masked[:, 1], plain[:, 1], atol=1e-6)  # the other utterance
  with pytest.raises(ValueError, match="go together"):
    wav2vec2.encode_features(cfg, params, feats, None, 2, time_mask=none)


def test_mfcc_frames_line_up_with_the_conv_encoder_and_clusters_are_deterministic():
  cfg = mconfig.small()
  wave = _tones(6, seconds=1.0)
  frames = pretrain.mfcc_frames(wave, cfg)
  assert frames.shape == (6, cfg.num_frames(16000), 39) == (6, 49, 39)
  np.testing.assert_allclose(frames.reshape(-1, 39).mean(0), 0.0, atol=1e-4)
  codes = pretrain.cluster_targets(frames, 3, seed=0)
  assert codes.shape == (6, 49) and codes.min() >= 0 and codes.max() < 3
  np.testing.assert_array_equal(codes, pretrain.cluster_targets(frames, 3, seed=0))


def test_loss_is_log_k_when_the_classifier_is_zero():
  # Zero kernel and bias: every frame's logits are equal, so its cross-entropy is ln K whatever
  # the mask and weights.
  cfg = mconfig.EncoderConfig(**TINY)
  params = wav2vec2.init_params(cfg, jax.random.PRNGKey(0))
  heads = pretrain.init_heads(jax.random.PRNGKey(1), cfg, SPEC)
  heads = {**heads, "kernel": jnp.zeros_like(heads["kernel"])}
  wave = _tones(3)
  targets = jnp.zeros((3, cfg.num_frames(8000)), jnp.int32)
  loss, m = pretrain.loss_fn(params, heads, wave, targets, jax.random.PRNGKey(2), cfg, SPEC)
  assert float(loss) == pytest.approx(math.log(8), rel=1e-5)
  assert m["masked_accuracy"].shape == (2,)


def test_pretraining_lowers_the_loss_on_real_audio_features():
  cfg = mconfig.EncoderConfig(**TINY)
  params, report = pretrain.pretrain(cfg, _tones(48), SPEC, seed=0, progress=False)
  first, last = report["history"][0], report["history"][-1]
  assert last["step"] == SPEC.steps - 1
  assert last["loss"] < 0.7 * first["loss"], report["history"]
  assert set(jax.tree.structure(params).node_data()[1]) == set(
      jax.tree.structure(wav2vec2.init_params(cfg, jax.random.PRNGKey(0))).node_data()[1])


def test_cli_pretrain_writes_a_checkpoint_the_run_can_load(tmp_path):
  corpus = make_mini_folder(str(tmp_path / "sc"))
  out = tmp_path / "ssl"
  assert cli.main(["pretrain", "--corpus", corpus, "--out", str(out), "--steps", "2",
                   "--batch-size", "4", "--num-clusters", "4"]) == 0
  enc, params = saved.load_converted(out)
  assert enc == mconfig.small()
  report = json.loads((out / "pretrain.json").read_text())
  assert report["corpus"] == {"folder": corpus} and len(report["history"]) == 2
  assert cli.main(["pretrain", "--corpus", corpus, "--out", str(out)]) == 2  # never overwrites


def test_builtin_checkpoint_is_the_small_preset_pretrained_on_other_speakers():
  path = pretrain.resolve_builtin("builtin:small_ssl")
  enc, params = saved.load_converted(path)
  assert enc == mconfig.small()
  report = json.loads((path / "pretrain.json").read_text())
  # The default run's corpus is made from data.seed 0; the pretraining corpus from another seed,
  # so no speaker of the default run (client or test) was heard in pretraining.
  assert report["corpus"]["seed"] != 0
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
  with pytest.raises(ValueError, match="unknown built-in"):
    pretrain.resolve_builtin("builtin:nope")


def test_init_model_rejects_overrides_that_contradict_the_checkpoint():
  from fedexit_jax import config_utils
  config = config_utils.apply_overrides(config_utils.default_config(),
                                        ["model.overrides.hidden_size=64"])
  with pytest.raises(config_utils.ConfigError, match="hidden_size"):
    pipeline.init_model(config, config_utils.encoder_config(config), jax.random.PRNGKey(0))


def test_the_default_config_starts_from_the_builtin_checkpoint():
  from fedexit_jax import config_utils
  config = config_utils.default_config()
  enc, params, head_params = pipeline.init_model(config, config_utils.encoder_config(config),
                                                 jax.random.PRNGKey(0))
  _, shipped = saved.load_converted(pretrain.resolve_builtin(config.model.checkpoint))
  assert enc == mconfig.small()
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(shipped)):
    np.testing.assert_array_equal(a, b)
  assert head_params["kernel"].shape == (4, 2 * enc.hidden_size, config.data.num_classes)
