"""configs/*.py and config_utils: schema, overrides with type coercion, validation errors."""
from __future__ import annotations

import functools
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from fedexit_jax import config_utils as cu

REPO = Path(__file__).resolve().parents[1]


def _with(overrides):
  return cu.apply_overrides(cu.default_config(), overrides)


@pytest.mark.parametrize("name", ["default.py", "paper_kws12.py", "paper_kws35.py"])
def test_every_config_has_the_default_schema(name):
  config = cu.load_config(REPO / "configs" / name)
  if config.data.source == "folder":
    config = cu.apply_overrides(config, ["data.dir=/data/sc"])
  enc = cu.validate_config(config)
  assert tuple(config.model.exits) == (3, 6, 9, 12)
  assert [t["max_depth"] for t in config.tiers] == [3, 6]
  assert enc.num_hidden_layers == 12
  assert sorted(cu.flat_keys(config)) == sorted(cu.flat_keys(cu.default_config()))


@pytest.mark.parametrize("name,task,tiers", [("kws12.py", "kws", [3, 6]), ("kws35.py", "kws", [3, 6]),
                                             ("sid.py", "sid", [3, 9]), ("er.py", "er", [3, 9]),
                                             ("asr.py", "asr", [3, 9]),
                                             ("asr_long.py", "asr", [3, 9])])
def test_task_configs_validate_and_name_their_task(name, task, tiers):
  """The paper's tiers: half at layer 3, half at the task's best layer (6 KWS, 9 otherwise)."""
  config = cu.load_config(REPO / "configs" / name)
  cu.validate_config(config)
  assert config.task == task and config.data.source == "synth"
  assert [t["max_depth"] for t in config.tiers] == tiers
  assert [t["fraction"] for t in config.tiers] == [0.5, 0.5]
  assert sorted(cu.flat_keys(config)) == sorted(cu.flat_keys(cu.default_config()))
  assert cu.resolve_data_dir(config).name.startswith("synth-" + ("" if task == "kws" else task))


def test_default_config_values():
  c = cu.default_config()
  assert c.data.source == "synth" and c.model.preset == "small"
  assert c.model.checkpoint == "builtin:small_ssl"
  assert c.data.num_clients >= 100 and c.clients_per_round <= c.data.num_clients
  assert sum(t["fraction"] for t in c.tiers) == 1.0
  assert c.weighting == "paper" and c.model.freeze_feature_encoder is True


def test_asr_starts_from_the_backbone_pretrained_on_sentences():
  from fedexit_jax import convert
  c = cu.load_config(REPO / "configs" / "asr.py")
  assert c.model.checkpoint == "builtin:small_ssl_sentences"
  assert (convert.resolve_builtin(c.model.checkpoint) / "pretrain.json").is_file()
  assert cu.load_config(REPO / "configs" / "sid.py").model.checkpoint == "builtin:small_ssl"


def test_asr_long_is_asr_over_100_rounds_and_300_readers():
  """Only the length, the readers, the evaluation cadence and the rate's schedule over rounds
  differ: the same task, model, tiers and optimiser as configs/asr.py, so its figures extend the
  10-minute run's."""
  short = cu.load_config(REPO / "configs" / "asr.py").to_dict()
  long_ = cu.load_config(REPO / "configs" / "asr_long.py").to_dict()

  def get(c, key):
    return functools.reduce(lambda d, part: d[part], key.split("."), c)

  assert cu.flat_keys(short) == cu.flat_keys(long_)
  assert {k: (get(short, k), get(long_, k)) for k in cu.flat_keys(short)
          if get(short, k) != get(long_, k)} == {
      "rounds": (25, 100), "eval_every": (5, 10), "data.num_speakers": (100, 300),
      "data.test_fraction": (0.1, 0.034),
      "client_optimizer.schedule": ("constant", "warmup_cosine")}
  from fedexit_jax.data import synth
  for c in (short, long_):  # ten readers held out in both
    ids = [str(i) for i in range(c["data"]["num_speakers"])]
    assert list(synth.assign_splits(ids, 0.0, c["data"]["test_fraction"]).values()).count(
        "test") == 10


def test_paper_configs_differ_in_classes_and_use_base_checkpoint():
  k12 = cu.load_config(REPO / "configs" / "paper_kws12.py")
  k35 = cu.load_config(REPO / "configs" / "paper_kws35.py")
  assert (k12.data.num_classes, k35.data.num_classes) == (12, 35)
  assert k12.rounds == 1000 and k12.model.preset == "base"
  assert k12.model.checkpoint == "facebook/hubert-base-ls960"
  # PATH:ARG selects get_config(arg).
  assert cu.load_config(str(REPO / "configs" / "paper_kws12.py") + ":35").data.num_classes == 35


def test_paper_config_needs_data_dir():
  with pytest.raises(cu.ConfigError, match="data.dir"):
    cu.validate_config(cu.load_config(REPO / "configs" / "paper_kws12.py"))


def test_overrides_are_parsed_with_the_type_of_the_default():
  c = _with(["rounds=7", "client_optimizer.learning_rate=3e-4", "progress_bar=false",
             "model.exits=3,6", "data.snr_db=5,20", "chunk_size=8", "weighting=samples",
             "model.checkpoint=facebook/hubert-base-ls960", "local_steps=4",
             'tiers=[{"fraction": 1.0, "max_depth": 6, "speed": 1}]',
             "model.overrides.hidden_size=64", "model.overrides.conv_dim=(32,32,32,32,32,32,32)"])
  assert c.rounds == 7 and isinstance(c.rounds, int)
  assert c.client_optimizer.learning_rate == pytest.approx(3e-4)
  assert c.progress_bar is False
  assert c.model.exits == (3, 6)
  assert c.data.snr_db == (5.0, 20.0) and isinstance(c.data.snr_db[0], float)
  assert c.chunk_size == 8
  assert c.weighting == "samples"
  assert c.model.checkpoint == "facebook/hubert-base-ls960"
  assert c.local_steps == 4
  assert c.tiers == [{"fraction": 1.0, "max_depth": 6, "speed": 1}]
  enc = cu.validate_config(c)
  assert enc.hidden_size == 64 and enc.conv_dim == (32,) * 7
  # The original is untouched.
  assert cu.default_config().rounds != 7


def test_split_config_args_both_forms():
  overrides, rest = cu.split_config_args(
      ["--workdir", "w", "--config.rounds=3", "--config.seed", "5", "--resume"])
  assert overrides == ["rounds=3", "seed=5"]
  assert rest == ["--workdir", "w", "--resume"]
  with pytest.raises(cu.ConfigError, match="needs a value"):
    cu.split_config_args(["--config.rounds"])


@pytest.mark.parametrize("override,match", [
    ("roundz=3", "unknown config key 'roundz'; did you mean 'rounds'"),
    ("model.exit=3", "did you mean 'model.exits'"),
    ("model.overrides.hiden_size=3", "did you mean 'model.overrides.hidden_size'"),
    ("rounds=abc", "cannot parse 'abc' as int"),
    ("progress_bar=maybe", "expected a boolean"),
    ("model=3", "group of settings"),
])
def test_bad_overrides_name_the_key(override, match):
  with pytest.raises(cu.ConfigError, match=match):
    _with([override])


@pytest.mark.parametrize("overrides,match", [
    (["model.exits=3,6,13"], r"exits \[13\] lie beyond the backbone: it has 12 layers"),
    (["model.overrides.num_hidden_layers=4"], r"exits \[6, 9, 12\] lie beyond"),
    (['tiers=[{"fraction": 1.0, "max_depth": 24, "speed": 1}]'], "deeper than the backbone"),
    (['tiers=[{"fraction": 1.0, "max_depth": 4, "speed": 1}]'], "is not an exit"),
    (['tiers=[{"fraction": 0.5, "max_depth": 3, "speed": 1}]'], "fractions sum to 0.5"),
    (['tiers=[{"fraction": 1.0, "max_depth": 3, "sped": 1}]'], r"tiers\[0\].sped'; did you mean 'tiers\[0\].speed'"),
    (["clients_per_round=101"], "exceeds the 100 clients"),
    (["weighting=papr"], "did you mean 'paper'"),
    (["loss=sum"], "loss='sum' is not one of"),
    (["server_optimizer.name=adam"], "server_optimizer.name"),
    (["client_optimizer.name=lion"], "client_optimizer.name"),
    (["rounds=0"], "rounds must be a positive number"),
    (["batch_size=-1"], "batch_size must be a positive number"),
    (["client_optimizer.learning_rate=0"], "learning_rate must be a positive"),
    (["model.exits=6,3"], "strictly increasing"),
    (["chunk_size=lots"], "chunk_size must be 'auto' or a positive int"),
    (["data.num_classes=35"], "need every non-keyword word"),
    (["data.source=hf"], "data.source='hf' is not one of"),
    (["model.preset=huge"], "model.preset"),
    (["exit_policy.thresholds=0.5,1.5"], r"must lie in \[0, 1\]"),
    (["client_depths=(3, 6)"], "client_depths has 2 entries"),
    (["model.frame_head_kernel=0"], "frame_head_kernel must be a positive number"),
    (["model.frame_head_rnn=-1"], "frame_head_rnn must be a whole number of GRU units"),
])
def test_validation_errors(overrides, match):
  with pytest.raises(cu.ConfigError, match=match):
    cu.validate_config(_with(overrides))


def test_unknown_and_missing_keys_in_a_config_file(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text(
      "from fedexit_jax import config_utils\n"
      "def get_config():\n"
      "  c = config_utils.default_config()\n"
      "  c.unlock()\n"
      "  c.data.num_client = 5\n"
      "  return c\n")
  with pytest.raises(cu.ConfigError, match="'data.num_client'; did you mean 'data.num_clients'"):
    cu.validate_config(cu.load_config(bad))
  partial = tmp_path / "partial.py"
  partial.write_text(
      "import ml_collections\n"
      "def get_config():\n"
      "  return ml_collections.ConfigDict({'rounds': 3})\n")
  with pytest.raises(cu.ConfigError, match="lacks key"):
    cu.validate_config(cu.load_config(partial))
  with pytest.raises(FileNotFoundError, match="nope.py"):
    cu.load_config(tmp_path / "nope.py")


def test_config_json_round_trip():
  c = _with(["model.exits=3,6", "tiers=[{\"fraction\": 1.0, \"max_depth\": 6, \"speed\": 2.0}]"])
  back = cu.config_from_json(cu.config_to_json(c))
  assert isinstance(back, ml_collections.ConfigDict)
  assert cu.config_to_json(back) == cu.config_to_json(c)
  assert list(back.model.exits) == [3, 6]


def test_resolve_data_dir(tmp_path, monkeypatch):
  monkeypatch.setenv("FEDEXIT_CACHE", str(tmp_path))
  a = cu.resolve_data_dir(cu.default_config())
  assert a.parent == tmp_path and a.name.startswith("synth-")
  assert cu.resolve_data_dir(_with(["seed=5"])) == a  # the training seed is not a corpus setting
  assert cu.resolve_data_dir(_with(["data.per_word=3"])) != a
  assert cu.resolve_data_dir(_with(["data.dir=/x/y"])) == Path("/x/y")
  with pytest.raises(cu.ConfigError, match="needs --config.data.dir"):
    cu.resolve_data_dir(_with(["data.source=folder"]))


def test_a_task_generators_revision_moves_its_cache_folder(tmp_path, monkeypatch):
  """A corpus written by an older generator is never reused under the same settings."""
  monkeypatch.setenv("FEDEXIT_CACHE", str(tmp_path))
  config = cu.load_config(REPO / "configs" / "asr.py")
  now = cu.resolve_data_dir(config)
  monkeypatch.setitem(cu.TASK_SYNTH_REVISION, "asr", cu.TASK_SYNTH_REVISION["asr"] + 1)
  assert cu.resolve_data_dir(config) != now and cu.resolve_data_dir(config).parent == tmp_path


def test_head_learning_rate_applies_to_the_exit_heads_only():
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from fedexit_jax import pipeline  # pylint: disable=import-outside-toplevel
  params = {"backbone": {"w": jnp.ones(2)}, "heads": {"kernel": jnp.ones(3)}}
  grads = jax.tree.map(jnp.ones_like, params)
  for head_lr, want in ((None, 1e-3), (1e-2, 1e-2)):
    c = _with(["client_optimizer.name=sgd", "client_optimizer.learning_rate=1e-3"]
              + ([f"client_optimizer.head_learning_rate={head_lr}"] if head_lr else []))
    opt = pipeline.client_optimizer(c.client_optimizer)
    updates, _ = opt.update(grads, opt.init(params), params)
    np.testing.assert_allclose(updates["backbone"]["w"], -1e-3, rtol=1e-6)
    np.testing.assert_allclose(updates["heads"]["kernel"], -want, rtol=1e-6)
  with pytest.raises(cu.ConfigError, match="head_learning_rate"):
    cu.validate_config(_with(["client_optimizer.head_learning_rate=-1.0"]))


def test_time_masking_config_is_checked():
  with pytest.raises(cu.ConfigError, match="time_mask_prob must be in"):
    cu.validate_config(_with(["time_mask_prob=1.0"]))
  with pytest.raises(cu.ConfigError, match="freeze_feature_encoder"):
    cu.validate_config(_with(["time_mask_prob=0.05", "model.freeze_feature_encoder=False"]))
  cu.validate_config(_with(["time_mask_prob=0.05"]))
