"""HuBERT-style pretraining: the masked-frame mechanics (both recipes' span masks), the targets,
the losses at hand-known points (cosine logits / temperature on masked frames only; the linear
heads), short real pretraining runs, the CLI, and the built-in checkpoints."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedexit_jax import cli, pipeline, pretrain
from fedexit_jax import convert
from fedexit_jax.convert import saved
from fedexit_jax.models import config as mconfig
from fedexit_jax.models import wav2vec2
from tests.test_data_librispeech import make_librispeech
from tests.test_data_speech_commands import make_mini_folder

TINY = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4)
SPEC = dataclasses.replace(pretrain.RECIPES["exits"], exits=(2, 4), num_clusters=8, steps=40,
                           batch_size=8, learning_rate=3e-3, warmup_steps=5)
HUBERT = dataclasses.replace(SPEC, recipe="hubert", exits=(4,), mask_prob=0.08, mask_span=10,
                             unmasked_weight=0.0, final_dim=16)


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


def _expected_masked_fraction(t, span, k):
  """fairseq's mask: k distinct starts among m = t - span positions, each covering `span`
  frames. Frame j is unmasked iff none of the c_j starts covering it was drawn:
  C(m - c_j, k) / C(m, k)."""
  m = t - span
  fracs = []
  for j in range(t):
    c = len(range(max(0, j - span + 1), min(j, m - 1) + 1))
    fracs.append(1 - math.comb(m - c, k) / math.comb(m, k))
  return float(np.mean(fracs))


def test_hubert_span_mask_masks_the_fraction_fairseqs_compute_mask_indices_gives():
  # T = 49 frames (a 1 s clip), p = 0.08, span 10: a batch draws floor(3.92 + u) starts per row,
  # 3 with probability 0.08 and 4 with 0.92.
  t, span = 49, 10
  keys = jax.random.split(jax.random.PRNGKey(0), 200)
  masks = np.asarray(jax.vmap(lambda k: pretrain.hubert_span_mask(k, (50, t), 0.08, span))(keys))
  want = 0.08 * _expected_masked_fraction(t, span, 3) + 0.92 * _expected_masked_fraction(t, span, 4)
  assert 0.5 < want < 0.65  # overlapping spans: below 4 spans * 10 / 49 frames
  assert masks.mean() == pytest.approx(want, abs=0.01)
  per_row = masks.sum(-1)  # 3 or 4 distinct starts: at least one span, at most four
  assert per_row.min() >= span + 2 and per_row.max() <= 4 * span
  # Starts are 0..t-span-1 (fairseq's np.random.choice(sz - mask_length)), so the last frame is
  # never masked and the one before it sometimes is.
  assert not masks[..., -1].any() and masks[..., -2].any()


def test_hubert_span_mask_keeps_fairseqs_min_masks_of_two():
  # 20 frames at p = 0.01: floor(0.2 + u) = 0 starts, raised to min_masks = 2 spans of 5 among
  # 15 start positions: two distinct starts cover between 6 and 10 frames.
  m = np.asarray(pretrain.hubert_span_mask(jax.random.PRNGKey(1), (500, 20), 0.01, 5))
  per_row = m.sum(-1)
  assert per_row.min() >= 6 and per_row.max() <= 10


def test_cosine_logits_match_a_hand_computed_case():
  proj = jnp.array([3.0, 4.0])
  embs = jnp.array([[1.0, 0.0], [0.0, 2.0], [-3.0, -4.0]])
  # cos = (3/5, 8/10, -25/25) = (0.6, 0.8, -1); / 0.1
  np.testing.assert_allclose(pretrain.cosine_logits(proj, embs, 0.1), [6.0, 8.0, -10.0],
                             rtol=1e-6)


def test_hubert_loss_is_the_cross_entropy_of_cosine_logits_on_masked_frames_only():
  # final_proj maps every frame to (1, 0) (zero kernel, bias (1, 0)); codes are (1,0), (0,1),
  # (-1,0), so every frame's logits are cos / 0.1 = (10, 0, -10). Masked frames are labelled
  # code 0 (cross-entropy ln(1 + e^-10 + e^-20)), unmasked ones code 1 (about 10): the loss is
  # the first only if unmasked frames are left out.
  cfg = mconfig.EncoderConfig(**TINY)
  spec = dataclasses.replace(HUBERT, num_clusters=3, final_dim=2)
  params = wav2vec2.init_params(cfg, jax.random.PRNGKey(0))
  heads = pretrain.init_heads(jax.random.PRNGKey(1), cfg, spec)
  assert heads["kernel"].shape == (1, 32, 2) and heads["label_embs"].shape == (3, 2)
  heads = {**heads, "kernel": jnp.zeros_like(heads["kernel"]), "bias": jnp.array([[1.0, 0.0]]),
           "label_embs": jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])}
  wave, rng = _tones(3), jax.random.PRNGKey(2)
  t = cfg.num_frames(8000)
  mask = pretrain.hubert_span_mask(rng, (3, t), spec.mask_prob, spec.mask_span)
  assert 0 < int(mask.sum()) < mask.size
  targets = jnp.where(mask, 0, 1).astype(jnp.int32)
  loss, m = pretrain.loss_fn(params, heads, wave, targets, rng, cfg, spec)
  # float32: 1 + e^-10 rounds at ~1e-7, so an absolute tolerance
  assert float(loss) == pytest.approx(math.log(1 + math.exp(-10) + math.exp(-20)), abs=1e-6)
  np.testing.assert_allclose(m["masked_accuracy"], [1.0], atol=1e-6)
  # the same with unmasked frames at weight 1 mixes in their ~10 nats
  mixed, _ = pretrain.loss_fn(params, heads, wave, targets, rng, cfg,
                              dataclasses.replace(spec, unmasked_weight=1.0))
  frac = float(mask.mean())
  assert float(mixed) == pytest.approx(frac * float(loss) + (1 - frac) * 10.0, rel=1e-3)


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


def test_an_unknown_recipe_is_an_error():
  cfg = mconfig.EncoderConfig(**TINY)
  with pytest.raises(ValueError, match="unknown pretraining recipe"):
    pretrain.init_heads(jax.random.PRNGKey(0), cfg, dataclasses.replace(SPEC, recipe="wav2vec"))


def test_recipes_and_the_command_line_spec():
  hubert, exits = pretrain.RECIPES["hubert"], pretrain.RECIPES["exits"]
  assert pretrain.PretrainSpec() == hubert
  assert (hubert.exits, hubert.num_clusters, hubert.mask_prob, hubert.mask_span,
          hubert.unmasked_weight, hubert.logit_temp) == ((12,), 100, 0.08, 10, 0.0, 0.1)
  assert (exits.exits, exits.num_clusters, exits.mask_prob, exits.mask_span,
          exits.unmasked_weight) == ((3, 6, 9, 12), 64, 0.1, 5, 0.5)
  args = argparse.Namespace(recipe="hubert", steps=7, batch_size=4, learning_rate=1e-2,
                            num_clusters=None)
  spec = pretrain.spec_from_args(args, num_hidden_layers=24)
  assert spec == dataclasses.replace(hubert, exits=(24,), steps=7, batch_size=4,
                                     learning_rate=1e-2)
  args.recipe, args.num_clusters = "exits", 5
  assert pretrain.spec_from_args(args, 24) == dataclasses.replace(
      exits, steps=7, batch_size=4, learning_rate=1e-2, num_clusters=5)


@pytest.mark.parametrize("spec", [SPEC, HUBERT], ids=["exits", "hubert"])
def test_pretraining_lowers_the_loss_on_real_audio_features(spec):
  cfg = mconfig.EncoderConfig(**TINY)
  params, report = pretrain.pretrain(cfg, _tones(48), spec, seed=0, progress=False)
  first, last = report["history"][0], report["history"][-1]
  assert last["step"] == spec.steps - 1
  assert len(last["masked_accuracy"]) == len(spec.exits)
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
  assert report["spec"]["recipe"] == "hubert" and report["spec"]["exits"] == [12]
  assert report["spec"]["num_clusters"] == 4 and "cores" in report["machine"]
  assert report["corpus"] == {"folder": corpus, "layout": "speech_commands"}
  assert len(report["history"]) == 2
  assert cli.main(["pretrain", "--corpus", corpus, "--out", str(out)]) == 2  # never overwrites


def test_windows_cut_sentences_into_back_to_back_rows_and_a_last_one_at_the_end():
  x = np.arange(2 * 10, dtype=np.float32).reshape(2, 10)
  rows = pretrain.windows(x, np.array([10, 3]), 4)  # 10 samples: 0-3, 4-7, leftover 2 >= 4 // 2
  np.testing.assert_array_equal(rows, [[0, 1, 2, 3], [4, 5, 6, 7], [6, 7, 8, 9]])  # row 2: short
  assert pretrain.windows(x, np.array([9, 8]), 4).tolist() == [  # leftover 1 < 2: dropped
      [0, 1, 2, 3], [4, 5, 6, 7], [10, 11, 12, 13], [14, 15, 16, 17]]
  with pytest.raises(ValueError, match="shorter than the 4-sample window"):
    pretrain.windows(x, np.array([3, 2]), 4)


def test_cli_pretrains_on_sentences_in_the_librispeech_layout(tmp_path):
  corpus = make_librispeech(tmp_path / "LibriSpeech")  # train-clean-100: 1.0 s, 2.5 s, 0.5 s
  out = tmp_path / "ssl"
  assert cli.main(["pretrain", "--corpus", corpus, "--layout", "librispeech",
                   "--window-seconds", "1.0", "--recipe", "exits", "--out", str(out), "--steps",
                   "2", "--batch-size", "2", "--num-clusters", "4"]) == 0
  report = json.loads((out / "pretrain.json").read_text())
  assert report["corpus"] == {"folder": corpus, "layout": "librispeech", "window_seconds": 1.0,
                              "num_sentences": 3}
  assert report["num_utterances"] == 4  # 1.0 s: one window; 2.5 s: three; 0.5 s: none
  assert report["spec"]["exits"] == [3, 6, 9, 12] and len(report["history"]) == 2
  enc, _ = saved.load_converted(out)
  assert enc == mconfig.small()


@pytest.mark.parametrize("name,recipe", [("small_ssl", "exits"), ("small_ssl_exits", "exits"),
                                         ("small_ssl_hubert", "hubert"),
                                         ("small_ssl_sentences", "exits")])
def test_builtin_checkpoints_are_the_small_preset_pretrained_on_other_speakers(name, recipe):
  path = convert.resolve_builtin("builtin:" + name)
  enc, params = saved.load_converted(path)
  assert enc == mconfig.small()
  report = json.loads((path / "pretrain.json").read_text())
  spec = pretrain.PretrainSpec(**{**report["spec"], "exits": tuple(report["spec"]["exits"])})
  # the recipe's spec; the sentence backbone ran twice the steps at half the batch of 1 s clips'
  # (its rows are 2 s windows, so the same frames per step)
  steps, batch = (3000, 16) if name == "small_ssl_sentences" else (1500, 32)
  assert spec == dataclasses.replace(pretrain.RECIPES[recipe], exits=spec.exits, steps=steps,
                                     batch_size=batch)
  assert spec.exits == pretrain.RECIPES[recipe].exits
  assert report["history"][-1]["step"] == spec.steps - 1
  # The default run's corpus is made from data.seed 0; the pretraining corpus from another seed,
  # so no speaker of the default run (client or test) was heard in pretraining.
  assert report["corpus"]["seed"] != 0
  assert report["corpus"].get("layout", "speech_commands") == (
      "librispeech" if name == "small_ssl_sentences" else "speech_commands")
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
  with pytest.raises(ValueError, match="unknown built-in"):
    convert.resolve_builtin("builtin:nope")


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
  _, shipped = saved.load_converted(convert.resolve_builtin(config.model.checkpoint))
  assert enc == mconfig.small()
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(shipped)):
    np.testing.assert_array_equal(a, b)
  assert head_params["kernel"].shape == (4, 2 * enc.hidden_size, config.data.num_classes)
