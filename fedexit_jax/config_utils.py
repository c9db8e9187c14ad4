"""Loading, overriding and validating the Python run configs in configs/.

A config file defines `get_config()` (optionally `get_config(arg)`, selected with `PATH:arg`) and
returns an `ml_collections.ConfigDict`. configs/default.py is the schema: every config has exactly
its keys, so a misspelt key fails before any work starts instead of being silently ignored.

Command-line overrides are `a.b=value` strings (the CLI's `--config.a.b=value`). A value is
parsed with the type of the field it replaces (int, float, bool, str, tuple...), so
`--config.rounds=5` stays an int and `--config.model.exits=3,6` becomes a tuple of ints.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import ml_collections

from fedexit_jax.models import config as mconfig

TASKS = ("kws", "sid", "er", "asr")  # fedexit_jax.tasks.TASKS (not imported: configs load first)
WEIGHTINGS = ("paper", "samples", "uniform", "depth", "fedavg_naive", "homogeneous")
LOSSES = ("deepest", "all", "distill")
CLIENT_OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
LR_SCHEDULES = ("constant", "warmup_cosine")
SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi")
SOURCES = ("synth", "folder", "tfds")
PARTITIONS = ("speaker", "per_speaker", "dirichlet", "iid")
TIER_KEYS = ("fraction", "max_depth", "speed")
# Free-form sub-dicts: their keys are checked against EncoderConfig's fields, not the default.
_OPEN_DICTS = ("model.overrides",)
# Fields that hold either a string or an int ("auto" or a number).
_INT_OR_STR = ("chunk_size", "cpu_devices")


class ConfigError(ValueError):
  """A config that cannot run: unknown key, bad value, inconsistent settings."""


def configs_dir() -> Path:
  """The shipped configs: the repository's configs/, installed as the package
  fedexit_jax.configs (the same files, editable or from a wheel)."""
  spec = importlib.util.find_spec("fedexit_jax.configs")
  if spec is not None and spec.submodule_search_locations:
    return Path(list(spec.submodule_search_locations)[0]).resolve()
  return Path(__file__).resolve().parents[1] / "configs"  # a source tree on sys.path


def default_config_path() -> Path:
  return configs_dir() / "default.py"


def load_config(path: str | Path) -> ml_collections.ConfigDict:
  """Runs `get_config()` of a Python config file. `path:arg` calls `get_config(arg)`."""
  path, arg = str(path), None
  if ":" in Path(path).name:  # a ':' in a folder name is left alone
    path, arg = path.rsplit(":", 1)
  file = Path(path)
  if file.is_dir():
    found = sorted(f.name for f in file.glob("*.py"))
    raise ConfigError(f"config {str(file)!r} is a folder; pass a Python config file in it"
                      + (f" ({', '.join(found[:5])})" if found else ""))
  if not file.is_file():
    shipped = configs_dir() / file.name
    if file.parent.name in ("configs", "") and shipped.is_file():  # configs/x.py outside a clone
      file = shipped
    else:
      names = sorted(f.name for f in configs_dir().glob("[!_]*.py"))
      raise FileNotFoundError(f"config file {str(file)!r} does not exist (shipped configs: "
                              f"{', '.join(f'configs/{n}' for n in names)})")
  spec = importlib.util.spec_from_file_location(f"_fedexit_config_{file.stem}", file)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except  # the user's code: name it, one line
    raise ConfigError(f"config file {str(file)!r} cannot be loaded: {_describe(e)}") from None
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {str(file)!r} defines no get_config()")
  try:
    config = module.get_config(arg) if arg is not None else module.get_config()
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"get_config({'' if arg is None else repr(arg)}) of {str(file)!r} "
                      f"raised {_describe(e)}") from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"get_config() of {str(file)!r} returned {type(config).__name__}, "
                      "expected an ml_collections.ConfigDict")
  return config


def _describe(e: BaseException) -> str:
  """`Type: message` on one line; a SyntaxError with its line number."""
  if isinstance(e, SyntaxError):
    return f"SyntaxError: {e.msg} (line {e.lineno})"
  return f"{type(e).__name__}: " + " ".join(str(e).split())


def default_config() -> ml_collections.ConfigDict:
  return load_config(default_config_path())


# ----------------------------------------------------------------------------- overrides


def _parse_literal(text: str) -> Any:
  """JSON first (true/null), then a Python literal; else the text itself."""
  for parse in (json.loads, ast.literal_eval):
    try:
      return parse(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
      pass
  return text


def _parse_bool(text: str, key: str) -> bool:
  low = text.strip().lower()
  if low in ("true", "1", "yes", "on"):
    return True
  if low in ("false", "0", "no", "off"):
    return False
  raise ConfigError(f"--config.{key}: expected a boolean (true/false), got {text!r}")


def _coerce(text: str, like: Any, key: str) -> Any:
  """Parses `text` with the type of `like`, the value it replaces."""
  try:
    if key.rsplit(".", 1)[-1] in _INT_OR_STR:
      return int(text) if text.strip().lstrip("-").isdigit() else text
    if isinstance(like, bool):
      return _parse_bool(text, key)
    if isinstance(like, int):
      return int(text.replace("_", ""))
    if isinstance(like, float):
      return float(text)
    if isinstance(like, str):  # "None" unsets an optional string (model.checkpoint=None)
      return None if text in ("None", "none") else text
    if isinstance(like, (tuple, list)):
      value = _parse_literal(text)
      if isinstance(value, str):  # a bare word: a 1-element sequence
        value = [value]
      if not isinstance(value, (tuple, list)):
        value = [value]
      if like and not isinstance(like[0], (dict, Mapping)):
        value = [_coerce(str(v), like[0], key) if not isinstance(v, type(like[0])) else v
                 for v in value]
      return type(like)(value)
    if like is None or isinstance(like, (dict, Mapping)):
      value = _parse_literal(text)
      return None if value in ("None", "none") else value
  except ValueError as e:
    if isinstance(e, ConfigError):
      raise
    raise ConfigError(f"--config.{key}: cannot parse {text!r} as "
                      f"{type(like).__name__} (the type of its default {like!r})") from None
  return _parse_literal(text)


def _unknown_key_error(key: str, candidates: Iterable[str]) -> ConfigError:
  candidates = sorted(candidates)
  close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
  hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
  return ConfigError(f"unknown config key {key!r}{hint}")


def flat_keys(config: Mapping[str, Any], prefix: str = "") -> list[str]:
  """Dotted paths of every leaf (ConfigDicts are recursed into, lists are leaves)."""
  out = []
  for k, v in config.items():
    path = f"{prefix}{k}"
    if isinstance(v, (ml_collections.ConfigDict, dict)) and path not in _OPEN_DICTS:
      out.extend(flat_keys(v, path + "."))
    else:
      out.append(path)
  return out


def _encoder_field_default(name: str, key: str) -> Any:
  fields = {f.name: f.default for f in dataclasses.fields(mconfig.EncoderConfig)}
  if name not in fields:
    raise _unknown_key_error(key, [f"model.overrides.{f}" for f in fields])
  return fields[name]


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
  """Sets the dotted `key` of `config` in place from the string `text`."""
  parts = key.split(".")
  node = config
  for i, part in enumerate(parts[:-1]):
    prefix = ".".join(parts[:i + 1])
    if prefix in _OPEN_DICTS:  # model.overrides.<EncoderConfig field>
      if len(parts) != i + 2:
        raise ConfigError(f"--config.{key}: {prefix} holds plain EncoderConfig fields")
      name = parts[-1]
      sub = node[part]
      like = sub[name] if name in sub else _encoder_field_default(name, key)
      with config.unlocked():
        if name in sub:
          del sub[name]
        sub[name] = _coerce(text, like, key)
      return
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise _unknown_key_error(key, flat_keys(config))
    node = node[part]
  last = parts[-1]
  if not isinstance(node, ml_collections.ConfigDict) or last not in node:
    raise _unknown_key_error(key, flat_keys(config))
  like = node[last]
  if isinstance(like, ml_collections.ConfigDict) and key not in _OPEN_DICTS:
    raise ConfigError(f"--config.{key} is a group of settings; set its fields, e.g. "
                      f"--config.{key}.{next(iter(like.keys()), 'field')}=...")
  value = _coerce(text, like.to_dict() if isinstance(like, ml_collections.ConfigDict) else like,
                  key)
  with config.unlocked():
    del node[last]  # replace the field: its type may change (None -> str, "auto" -> 8)
    node[last] = value


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[str] | Mapping[str, str]) -> ml_collections.ConfigDict:
  """Applies `["a.b=value", ...]` (or `{"a.b": "value"}`) to a copy of `config`."""
  config = ml_collections.ConfigDict(config.to_dict())
  items = overrides.items() if isinstance(overrides, Mapping) else [
      _split_override(o) for o in overrides]
  for key, text in items:
    apply_override(config, key, str(text))
  return config


def _split_override(item: str) -> tuple[str, str]:
  if "=" not in item:
    raise ConfigError(f"override {item!r} is not of the form key=value")
  key, text = item.split("=", 1)
  return key.strip(), text


def split_config_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separates `--config.key=value` / `--config.key value` from other arguments.

  Returns (overrides as "key=value" strings, remaining arguments).
  """
  overrides, rest, i = [], [], 0
  argv = list(argv)
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--config."):
      body = arg[len("--config."):]
      if "=" in body:
        overrides.append(body)
      elif i + 1 < len(argv):
        overrides.append(f"{body}={argv[i + 1]}")
        i += 1
      else:
        raise ConfigError(f"{arg} needs a value: {arg}=VALUE")
    else:
      rest.append(arg)
    i += 1
  return overrides, rest


def script_parser(doc: str | None, argv: Sequence[str] | None = None):
  """(an argparse parser that prints `doc` as its help, the `--config.key=value` overrides, the
  script's own arguments) for the experiment and benchmark scripts that take a config."""
  import argparse  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  overrides, own = split_config_args(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  return parser, overrides, own


# ----------------------------------------------------------------------------- validation




def encoder_config(config: ml_collections.ConfigDict) -> mconfig.EncoderConfig:
  """The backbone's EncoderConfig: the preset with `model.overrides` applied."""
  overrides = {k: (tuple(v) if isinstance(v, list) else v)
               for k, v in config.model.overrides.to_dict().items()}
  try:
    return mconfig.get_preset(config.model.preset, **overrides)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"model: {e}") from None


def _check_schema(config: Mapping[str, Any], schema: Mapping[str, Any], prefix: str = "") -> None:
  for key in config.keys():
    if key not in schema:
      raise _unknown_key_error(f"{prefix}{key}", flat_keys(schema, prefix))
  missing = [f"{prefix}{k}" for k in schema.keys() if k not in config]
  if missing:
    raise ConfigError(f"config lacks key(s) {missing}; start get_config() from configs/default.py's "
                      "get_config() and change values")
  for key, like in schema.items():
    path, value = f"{prefix}{key}", config[key]
    if isinstance(like, (ml_collections.ConfigDict, dict)):
      if not isinstance(value, (ml_collections.ConfigDict, dict)):
        raise ConfigError(f"config key {path!r} must be a group of settings, got {value!r}")
      if path not in _OPEN_DICTS:
        _check_schema(value, like, path + ".")
      continue
    if like is None or value is None or key in _INT_OR_STR:
      continue
    ok = (isinstance(value, bool) if isinstance(like, bool) else
          isinstance(value, int) and not isinstance(value, bool) if isinstance(like, int) else
          isinstance(value, (int, float)) and not isinstance(value, bool)
          if isinstance(like, float) else
          isinstance(value, (tuple, list)) if isinstance(like, (tuple, list)) else
          isinstance(value, type(like)))
    if not ok:
      raise ConfigError(f"config key {path!r} must be {type(like).__name__} like its default "
                        f"{like!r}, got {value!r}")


def _choice(value: Any, choices: Sequence[str], key: str) -> None:
  if value not in choices:
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"{key}={value!r} is not one of {list(choices)}{hint}")


def _positive(config: ml_collections.ConfigDict, *keys: str, allow_none: bool = False) -> None:
  for key in keys:
    value = config
    for part in key.split("."):
      value = value[part]
    if value is None and allow_none:
      continue
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        or value <= 0):
      raise ConfigError(f"{key} must be a positive number, got {value!r}")


def validate_config(config: ml_collections.ConfigDict,
                    schema: ml_collections.ConfigDict | None = None) -> mconfig.EncoderConfig:
  """Raises ConfigError naming the problem if `config` cannot run; returns its EncoderConfig.

  Checks the keys against the default schema, then values: positive counts and rates, known
  names (weighting, loss, optimisers, data source, partition), exits within the backbone, tiers
  that are exits with fractions summing to 1, and no more clients per round than clients. It
  does not touch the disk or the network. With `model.checkpoint` set, the depth is the preset's;
  the checkpoint's own config is checked against it when it is loaded.
  """
  schema = default_config() if schema is None else schema
  _check_schema(config, schema)
  _positive(config, "rounds", "eval_every", "eval_batch_size", "checkpoint_every",
            "stop_after_excluded_rounds",
            "max_checkpoints", "clients_per_round", "batch_size", "local_epochs",
            "client_optimizer.learning_rate", "server_optimizer.learning_rate",
            "data.num_clients", "data.clip_seconds", "accounting.flops_per_second",
            "model.frame_head_kernel")
  _positive(config, "local_steps", "client_optimizer.head_learning_rate", allow_none=True)
  if config.fedprox_mu < 0 or config.distill_weight < 0 or config.distill_temperature <= 0:
    raise ConfigError("fedprox_mu and distill_weight must be >= 0 and distill_temperature > 0")
  if not isinstance(config.model.frame_head_kernel, int):
    raise ConfigError(f"model.frame_head_kernel must be a whole number of frames, got "
                      f"{config.model.frame_head_kernel!r}")
  rnn = config.model.frame_head_rnn
  if not isinstance(rnn, int) or isinstance(rnn, bool) or rnn < 0:
    raise ConfigError(f"model.frame_head_rnn must be a whole number of GRU units per direction "
                      f"(0: no GRU), got {rnn!r}")
  _choice(config.task, TASKS, "task")
  if config.decode.lexicon and config.task != "asr":
    raise ConfigError(f"decode.lexicon={config.decode.lexicon!r} reads CTC transcripts: only task "
                      f"asr has them, not {config.task!r}")
  if not isinstance(config.decode.beam_size, int) or config.decode.beam_size < 1:
    raise ConfigError(f"decode.beam_size must be a whole number >= 1, got "
                      f"{config.decode.beam_size!r}")
  _choice(config.weighting, WEIGHTINGS, "weighting")
  _choice(config.loss, LOSSES, "loss")
  _choice(config.client_optimizer.name, CLIENT_OPTIMIZERS, "client_optimizer.name")
  _choice(config.client_optimizer.schedule, LR_SCHEDULES, "client_optimizer.schedule")
  co = config.client_optimizer
  if (not isinstance(co.warmup_rounds, int) or not 0 <= co.warmup_rounds <= config.rounds
      or not 0.0 <= co.final_fraction <= 1.0):
    raise ConfigError(f"client_optimizer.warmup_rounds must be a whole number in [0, rounds="
                      f"{config.rounds}] and final_fraction in [0, 1], got {co.warmup_rounds!r} "
                      f"and {co.final_fraction!r}")
  _choice(config.server_optimizer.name, SERVER_OPTIMIZERS, "server_optimizer.name")
  _choice(config.data.source, SOURCES, "data.source")
  _choice(config.data.partition, PARTITIONS, "data.partition")
  _choice(config.model.preset, tuple(mconfig.PRESETS), "model.preset")
  if config.data.num_classes not in (12, 35):
    raise ConfigError(f"data.num_classes must be 12 or 35, got {config.data.num_classes!r}")
  if (config.task == "kws" and config.data.source == "synth" and config.data.num_classes == 35
      and config.data.unknown_per_speaker < 25):
    raise ConfigError("35 classes from the synthetic corpus need every non-keyword word: "
                      "--config.data.unknown_per_speaker=25 (as configs/kws35.py sets)")
  if config.task != "kws" and config.data.source == "tfds":
    raise ConfigError(f"data.source='tfds' is keyword spotting's (Speech Commands); task "
                      f"{config.task!r} reads 'synth' or a corpus 'folder'")
  if config.data.source == "folder" and not config.data.dir:
    raise ConfigError("data.source='folder' needs the corpus folder: --config.data.dir=/path/to/"
                      + {"kws": "speech_commands_v0.02", "sid": "voxceleb1", "er": "IEMOCAP",
                         "asr": "LibriSpeech"}[config.task])
  if config.data.test_dir is not None and (config.data.source != "folder"
                                           or config.data.num_classes != 12):
    raise ConfigError("data.test_dir (the 12-class test archive) needs data.source='folder' and "
                      "data.num_classes=12")
  if config.data.partition == "dirichlet":
    _positive(config, "data.dirichlet_alpha")
    if config.task == "asr":
      raise ConfigError("data.partition='dirichlet' splits by class label; the asr task has "
                        "none (use speaker, per_speaker or iid)")
  _positive(config, "data.max_seconds", "data.per_speaker", "data.num_sessions")
  if config.data.source == "synth":
    _positive(config, "data.num_speakers", "data.per_word", "data.test_fraction")
    v, t = config.data.val_fraction, config.data.test_fraction
    if not (0 <= v and 0 < t and v + t < 1):
      raise ConfigError(f"data.val_fraction={v} and data.test_fraction={t} must be >= 0 "
                        "(test > 0) and leave training speakers (sum < 1)")
    lo_hi = tuple(config.data.snr_db)
    if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
      raise ConfigError(f"data.snr_db must be (low, high) with low <= high, got {lo_hi}")
  if not 0.0 <= config.time_mask_prob < 1.0 or config.time_mask_span < 1:
    raise ConfigError(f"time_mask_prob must be in [0, 1) and time_mask_span >= 1, got "
                      f"{config.time_mask_prob}, {config.time_mask_span}")
  if config.time_mask_prob and not config.model.freeze_feature_encoder:
    raise ConfigError("time_mask_prob masks the cached conv features: it needs "
                      "model.freeze_feature_encoder=True")
  cs = config.chunk_size
  if not (cs == "auto" or (isinstance(cs, int) and not isinstance(cs, bool) and cs > 0)):
    raise ConfigError(f"chunk_size must be 'auto' or a positive int, got {cs!r}")
  dist = config.distributed
  if dist.coordinator and not 0 <= dist.process_id < dist.num_processes:
    raise ConfigError(f"distributed.process_id must be in [0, num_processes={dist.num_processes}),"
                      f" got {dist.process_id}")
  if dist.coordinator and ":" not in dist.coordinator:
    raise ConfigError(f"distributed.coordinator must be 'host:port', got {dist.coordinator!r}")
  if min(dist.initialization_timeout, dist.heartbeat_timeout) < 1:
    raise ConfigError("distributed timeouts must be >= 1 s, got "
                      f"{dist.initialization_timeout}, {dist.heartbeat_timeout}")
  from fedexit_jax import feature_store, runtime  # pylint: disable=import-outside-toplevel
  try:
    runtime.resolve_cpu_devices(config.cpu_devices)
    runtime.resolve_compilation_cache(config.compilation_cache)
    feature_store.resolve(config.feature_cache)
  except ValueError as e:
    raise ConfigError(str(e)) from None

  enc = encoder_config(config)
  depth = enc.num_hidden_layers
  exits = tuple(config.model.exits)
  if not exits or any(not isinstance(e, int) or isinstance(e, bool) for e in exits):
    raise ConfigError(f"model.exits must be a non-empty tuple of layer numbers, got {exits!r}")
  if list(exits) != sorted(set(exits)):
    raise ConfigError(f"model.exits must be strictly increasing, got {exits}")
  bad = [e for e in exits if not 1 <= e <= depth]
  if bad:
    raise ConfigError(f"model.exits {bad} lie beyond the backbone: it has {depth} layers "
                      f"(model.preset={config.model.preset!r}), exits must be in 1..{depth}")

  tiers = list(config.tiers)
  if not tiers:
    raise ConfigError("tiers is empty; give at least one dict(fraction, max_depth, speed)")
  for i, tier in enumerate(tiers):
    if not isinstance(tier, Mapping):
      raise ConfigError(f"tiers[{i}] must be a dict(fraction=, max_depth=, speed=), got {tier!r}")
    for k in tier:
      if k not in TIER_KEYS:
        raise _unknown_key_error(f"tiers[{i}].{k}", [f"tiers[{i}].{t}" for t in TIER_KEYS])
    for k in TIER_KEYS:
      if k not in tier:
        raise ConfigError(f"tiers[{i}] lacks {k!r}; a tier is dict(fraction=, max_depth=, speed=)")
    d = tier["max_depth"]
    if d > depth:
      raise ConfigError(f"tiers[{i}].max_depth={d} is deeper than the backbone ({depth} layers)")
    if d not in exits:
      raise ConfigError(f"tiers[{i}].max_depth={d} is not an exit; model.exits={exits}")
    for k in ("fraction", "speed"):
      if not isinstance(tier[k], (int, float)) or not tier[k] > 0:
        raise ConfigError(f"tiers[{i}].{k} must be > 0, got {tier[k]!r}")
  total = sum(t["fraction"] for t in tiers)
  if abs(total - 1.0) > 1e-6:
    raise ConfigError(f"tier fractions sum to {total:g}, not 1: "
                      f"{[t['fraction'] for t in tiers]}")
  per_speaker = config.data.partition == "per_speaker"  # clients = speakers, known after loading
  if config.client_depths is not None:
    cd = tuple(config.client_depths)
    if len(cd) != config.data.num_clients and not per_speaker:
      raise ConfigError(f"client_depths has {len(cd)} entries for "
                        f"data.num_clients={config.data.num_clients}")
    bad = sorted({d for d in cd if d not in exits})
    if bad:
      raise ConfigError(f"client_depths {bad} are not exits; model.exits={exits}")
  if config.clients_per_round > config.data.num_clients and not per_speaker:
    raise ConfigError(f"clients_per_round={config.clients_per_round} exceeds the "
                      f"{config.data.num_clients} clients (data.num_clients)")
  thresholds = tuple(config.exit_policy.thresholds)
  if any(not 0 <= t <= 1 for t in thresholds):
    raise ConfigError(f"exit_policy.thresholds must lie in [0, 1], got {thresholds}")
  return enc


SYNTH_KEYS = ("seed", "num_speakers", "per_word", "unknown_per_speaker", "snr_db",
              "val_fraction", "test_fraction")
TASK_SYNTH_KEYS = {  # what each other task's offline corpus is generated from (its cache key)
    "sid": ("seed", "num_speakers", "per_speaker", "verify_speakers", "num_trials",
            "test_fraction", "snr_db"),
    "er": ("seed", "num_sessions", "per_speaker"),
    "asr": ("seed", "num_speakers", "per_speaker", "test_fraction"),
}
# Bumped when a task's generator changes what it writes, so a cached corpus of the old generator
# is never reused under the same settings (asr 2: close-talk rooms, as LibriSpeech's "clean").
TASK_SYNTH_REVISION = {"asr": 2}


def resolve_data_dir(config: ml_collections.ConfigDict) -> Path:
  """The corpus folder: `data.dir` if set; for the synthetic corpus otherwise a cache folder
  named by a hash of its generation settings ($FEDEXIT_CACHE, default ~/.cache/fedexit_jax), so
  runs with the same corpus share it and a different corpus never reuses a stale one."""
  if config.data.dir:
    return Path(config.data.dir).expanduser()
  if config.data.source != "synth":
    raise ConfigError(f"data.source={config.data.source!r} needs --config.data.dir")
  import hashlib  # pylint: disable=import-outside-toplevel
  if config.task != "kws":
    keys = TASK_SYNTH_KEYS[config.task]
    settings = {k: config.data[k] for k in keys}
    if config.task in TASK_SYNTH_REVISION:
      settings["revision"] = TASK_SYNTH_REVISION[config.task]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=list).encode()).hexdigest()
    return cache_root() / f"synth-{config.task}-{digest[:12]}"
  settings = {k: config.data[k] for k in SYNTH_KEYS}
  digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=list).encode()).hexdigest()
  return cache_root() / f"synth-{digest[:12]}"


def cache_root() -> Path:
  """Where generated corpora live: $FEDEXIT_CACHE, default ~/.cache/fedexit_jax."""
  import os  # pylint: disable=import-outside-toplevel
  return Path(os.environ.get("FEDEXIT_CACHE", Path.home() / ".cache" / "fedexit_jax")).expanduser()


CACHE_OFF = ("off", "none", "0", "false")


def resolve_cache_folder(value, env: str, subdir: str, key: str) -> Path | None:
  """A cache folder from its config value (`key`, for the error): None: off. 'auto': $`env`
  where set (a folder, or off/none/0/false), else <cache_root()>/`subdir`. Any other string:
  that folder (so a folder named in the config wins over the variable)."""
  import os  # pylint: disable=import-outside-toplevel
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (str, os.PathLike)) or not str(value):
    raise ValueError(f"{key} must be a folder, 'auto' or None, got {value!r}")
  if value == "auto":
    where = os.environ.get(env, "").strip()
    if where.lower() in CACHE_OFF:
      return None
    if where:
      return Path(where).expanduser().absolute()
    return (cache_root() / subdir).absolute()
  return Path(value).expanduser().absolute()


def config_to_json(config: ml_collections.ConfigDict) -> str:
  """Canonical JSON (sorted keys, tuples as lists): equal configs give equal strings."""
  return json.dumps(json.loads(config.to_json()), sort_keys=True)


def config_from_json(text: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(json.loads(text))
