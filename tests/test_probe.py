"""The per-layer linear probe: it finds the one layer that separates the classes, pools with the
exit heads' statistics pooling whatever the batching, and `fedexit probe` writes its files."""
from __future__ import annotations

import json

import jax
import numpy as np

from fedexit_jax import cli, probe
from fedexit_jax.models import config as mconfig
from fedexit_jax.models import heads, wav2vec2
from tests.test_data_speech_commands import make_mini_folder


def test_the_probe_finds_the_one_layer_that_separates_the_classes():
  # Three layers of 8-dim features for 3 classes: layer 2 holds a one-hot of the class (plus
  # noise 0.1), layers 1 and 3 are pure noise. Layer 2 is perfectly separable; noise is not.
  rng = np.random.default_rng(0)
  y_train, y_test = np.arange(120) % 3, np.arange(60) % 3

  def layers(y):
    x = rng.standard_normal((3, len(y), 8))
    x[1, :, :3] = np.eye(3)[y] + 0.1 * rng.standard_normal((len(y), 3))
    return x

  acc = probe.probe_layers(layers(y_train), y_train, layers(y_test), y_test)
  assert list(acc) == ["1", "2", "3"]
  assert acc["2"] == 1.0
  assert acc["1"] < 0.6 and acc["3"] < 0.6


def test_pooled_layers_is_stats_pool_of_every_layer_for_any_batch_size():
  cfg = mconfig.EncoderConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                              intermediate_size=32, conv_dim=(8,) * 7, num_conv_pos_embeddings=4,
                              num_conv_pos_embedding_groups=2)
  params = wav2vec2.init_params(cfg, jax.random.PRNGKey(0))
  feats = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (5, 12, 8)))
  mask = np.arange(12) < np.array([12, 9, 12, 4, 7])[:, None]
  want = heads.stats_pool(wav2vec2.encode_features(cfg, params, feats, mask, 3), mask)
  got = probe.pooled_layers(cfg, params, feats, mask, batch_size=2)  # 3 batches, last padded
  assert got.shape == (3, 5, 32)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_cli_probe_writes_an_accuracy_per_layer_and_a_plot(tmp_path, capsys):
  corpus = make_mini_folder(str(tmp_path / "sc"))
  workdir = tmp_path / "probe"
  tiny = ["data.source=folder", f"data.dir={corpus}", "data.num_clients=2",
          "clients_per_round=2", "progress_bar=False", "model.checkpoint=None",
          "model.exits=(2, 4)", "cpu_devices=1",
          ('tiers=[{"fraction": 0.5, "max_depth": 2, "speed": 1.0}, '
           '{"fraction": 0.5, "max_depth": 4, "speed": 2.0}]'),
          "model.overrides.hidden_size=32", "model.overrides.num_hidden_layers=4",
          "model.overrides.num_attention_heads=2", "model.overrides.intermediate_size=64",
          "model.overrides.conv_dim=(16, 16, 16, 16, 16, 16, 16)",
          "model.overrides.num_conv_pos_embeddings=8",
          "model.overrides.num_conv_pos_embedding_groups=2"]
  assert cli.main(["probe", "--workdir", str(workdir)] + [f"--config.{o}" for o in tiny]) == 0
  result = json.loads((workdir / "probe.json").read_text())
  assert sorted(result["layer"], key=int) == ["1", "2", "3", "4"]
  assert all(0.0 <= a <= 1.0 for a in result["layer"].values())
  assert result["layer"][str(result["best_layer"])] == max(result["layer"].values())
  # the mini folder: 2 training speakers x 5 words x 2 clips (+ silence), 1 test speaker
  assert result["num_test"] >= 10 and result["num_train"] >= 20
  assert (workdir / "probe.png").stat().st_size > 0
  assert "best layer" in capsys.readouterr().out
