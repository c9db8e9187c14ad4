"""From a config to what a federated run consumes: the corpus, the client datasets, the backbone.

Data flows one way: config -> corpus folder -> decoded arrays -> speaker partition -> padded
client arrays -> (cached conv features) -> federated.ClientData. train.py calls these in order.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
import optax

from fedexit_jax import config_utils, feature_store, tasks
from fedexit_jax import federated as fl
from fedexit_jax import models
from fedexit_jax.convert import pretrained
from fedexit_jax.speech_model import SpeechExitModel
from fedexit_jax.data import partition, speech_commands
from fedexit_jax.models import feature_cache, heads, modules, wav2vec2
from fedexit_jax.models.config import EncoderConfig

log = logging.getLogger(__name__)

DataError = speech_commands.DataError  # the corpus cannot feed this run (a one-line CLI error)

LOSS_NAMES = {"deepest": "last", "all": "sum", "distill": "distill"}  # config name -> engine name


Corpus = tasks.Corpus


class FederatedData(NamedTuple):
  clients: fl.ClientData      # every client's padded data, leaves [M, N, ...]
  test_inputs: np.ndarray     # [Q, T, C] cached features, or [Q, S] waveforms (CNN trained)
  test_mask: np.ndarray
  test_labels: np.ndarray     # [Q, ...] as the task's objective reads them
  summary: dict[str, Any]


_MEMO: dict[str, dict] = {"corpus": {}, "features": {}}  # in-process, one entry each


def _memo(kind: str, key: str, make):
  """The last value of `kind` if made with the same key, else make() (and forget the old one):
  a sweep of scenarios over one corpus in one process decodes it and runs the CNN once."""
  store = _MEMO[kind]
  if key not in store:
    store.clear()
    store[key] = make()
  return store[key]


def task_of(config: ml_collections.ConfigDict) -> tasks.Task:
  return tasks.get(config.task)


def load_corpus(config: ml_collections.ConfigDict) -> Corpus:
  """Generates (once, cached) or finds the task's corpus and decodes it into arrays (memoised
  in-process on the task and data config)."""
  key = json.dumps([config.task, config.data.to_dict(),
                    str(config_utils.resolve_data_dir(config))], sort_keys=True, default=str)
  return _memo("corpus", key, lambda: task_of(config).load(config))


def partition_clients(config: ml_collections.ConfigDict, train) -> partition.ClientDatasets:
  d = config.data
  have = (len(set(train.speakers.tolist())) if d.partition == "speaker" else len(train.labels))
  if d.partition != "per_speaker" and d.num_clients > have:
    what = "speakers" if d.partition == "speaker" else "utterances"
    raise DataError(f"data.num_clients={d.num_clients} but the training split has only {have} "
                    f"{what}; lower --config.data.num_clients (and clients_per_round)")
  if d.partition in ("speaker", "per_speaker"):  # per_speaker: one client per speaker
    num_clients = None if d.partition == "per_speaker" else d.num_clients
    parts = partition.by_speaker(train.speakers, num_clients=num_clients, seed=config.seed)
  elif d.partition == "dirichlet":
    parts = partition.dirichlet(np.asarray(train.labels), d.num_clients, d.dirichlet_alpha,
                                seed=config.seed)
  else:
    parts = partition.iid(len(train.labels), d.num_clients, seed=config.seed)
  return partition.client_datasets(train.waveforms, task_of(config).labels(train), parts,
                                   max_examples=d.max_examples_per_client, seed=config.seed,
                                   lengths=train.lengths, pad_multiple=config.batch_size)


def _sample_mask(lengths: np.ndarray, num_samples: int) -> np.ndarray:
  return np.arange(num_samples) < np.asarray(lengths)[..., None]


def check_against_checkpoint(config: ml_collections.ConfigDict, encoder: EncoderConfig) -> None:
  """ConfigError if `model.overrides` or `model.exits` contradict the checkpoint's encoder."""
  for key, value in config.model.overrides.to_dict().items():
    value = tuple(value) if isinstance(value, list) else value
    if getattr(encoder, key) != value:
      raise config_utils.ConfigError(
          f"model.overrides.{key}={value!r} contradicts the checkpoint "
          f"{str(config.model.checkpoint)!r}, whose {key} is {getattr(encoder, key)!r}; drop "
          "the override, or set model.checkpoint=None to train that architecture from scratch")
  if max(config.model.exits) > encoder.num_hidden_layers:
    raise config_utils.ConfigError(
        f"model.exits {tuple(config.model.exits)} go beyond the checkpoint's "
        f"{encoder.num_hidden_layers} layers")


FOLDERS = {  # what data.dir holds, per task (for the error naming a missing one)
    "kws": "an extracted Speech Commands v0.02 folder (word/<speaker>_nohash_<n>.wav)",
    "sid": "a VoxCeleb1 folder (wav/idXXXXX/<video>/<n>.wav, iden_split.txt, veri_test2.txt)",
    "er": "an IEMOCAP folder (Session1..5/sentences/wav, Session*/dialog/EmoEvaluation)",
    "asr": "a LibriSpeech folder (<split>/<speaker>/<chapter>/*.flac and *.trans.txt)",
}


def preflight(config: ml_collections.ConfigDict) -> None:
  """The checks of the inputs on disk that cost no data work, so `--dry-run` refuses what the run
  would refuse: the data folder exists, the checkpoint exists and (when its config is a small
  JSON file: converted folders, Hugging Face folders) agrees with the overrides and exits."""
  d = config.data
  if d.dir and d.source != "synth" and not Path(d.dir).expanduser().is_dir():
    raise FileNotFoundError(f"data.dir {d.dir!r} is not a folder; expected "
                            + ("the tfds data_dir" if d.source == "tfds" else FOLDERS[config.task]))
  ckpt = config.model.checkpoint
  if ckpt is None:
    return
  from fedexit_jax.convert import pytorch  # pylint: disable=import-outside-toplevel
  if str(ckpt).startswith(pretrained.BUILTIN_PREFIX):
    try:
      ckpt = pretrained.resolve_builtin(ckpt)
    except ValueError as e:  # an unknown built-in name
      raise config_utils.ConfigError(f"model.checkpoint: {e}") from None
  path = Path(ckpt).expanduser()
  if not path.exists():
    if pytorch.looks_like_hub_id(str(ckpt)):
      return  # resolved (from the local Hugging Face cache) when the run loads it
    raise FileNotFoundError(f"model.checkpoint {str(ckpt)!r} does not exist")
  if not (path / "params").is_dir():  # not a converted folder: PyTorch / HF weights
    pytorch.check_weights_files(path)
  json_file = path / "config.json" if path.is_dir() else path.parent / "config.json"
  if not json_file.is_file() or path.suffix in (".pt", ".pth"):  # fairseq: config is inside
    return
  try:
    meta = json.loads(json_file.read_text())
    encoder = (EncoderConfig.from_hf_dict({k: v for k, v in meta.items() if k != "format"})
               if "format" in meta else pytorch.config_from_hf_dict(meta))
  except (ValueError, TypeError, KeyError) as e:
    raise pytorch.CheckpointFileError(f"{json_file}: not a readable model config ({e})") from None
  check_against_checkpoint(config, encoder)


def init_model(config: ml_collections.ConfigDict, encoder: EncoderConfig, rng: jax.Array,
               corpus: Corpus | None = None) -> tuple[EncoderConfig, dict, dict]:
  """(encoder config, backbone params, exit-head params): random init or a checkpoint; the heads
  are the task's (corpus: for tasks whose classes come from the data, e.g. speaker id)."""
  ckpt = config.model.checkpoint
  k_model, k_heads = jax.random.split(rng)
  if ckpt is None:
    params = wav2vec2.init_params(encoder, k_model)
  else:
    encoder, params = pretrained.load_backbone(ckpt)
    check_against_checkpoint(config, encoder)
  task = task_of(config)
  head_params = heads.init_heads(k_heads, task.head, encoder.hidden_size,
                                 task.num_outputs(config, corpus), len(config.model.exits),
                                 frame_kernel=config.model.frame_head_kernel,
                                 frame_rnn=config.model.frame_head_rnn)
  return encoder, params, head_params


def _digest(*arrays) -> str:
  h = hashlib.sha1()
  for a in arrays:
    a = np.ascontiguousarray(np.asarray(a))
    h.update(str((a.dtype, a.shape)).encode())
    h.update(a.tobytes())
  return h.hexdigest()


def uses_mask(config: ml_collections.ConfigDict, encoder: EncoderConfig) -> bool:
  """Whether padded audio is masked. Base-style (group-norm) models are run on zero-padded 1 s
  keyword clips without an attention mask, as transformers' feature extractor does for them;
  layer-norm models, and every task with utterances of different lengths, get the mask (and
  those tasks' group norm reads only the valid samples: modules.FeatureEncoder)."""
  return encoder.feat_extract_norm == "layer" or task_of(config).mask_padding


def utterance_features(config: ml_collections.ConfigDict, encoder: EncoderConfig, frozen: dict,
                       corpus: Corpus) -> tuple[np.ndarray, ...]:
  """The frozen conv encoder's features of every utterance, once: (train features [U, T, C],
  train frame masks [U, T], test features [Q, T, C], test frame masks [Q, T]).

  Per utterance, not per padded client row, so no CNN time is spent on padding; keyed on the
  audio, the encoder, its weights, the masking and the code that runs it; memoised in-process
  (the scenarios of a sweep reuse them) and kept on disk for the next run (config.feature_cache:
  feature_store).
  """
  use_mask = uses_mask(config, encoder)
  mask_group_norm = task_of(config).mask_padding
  parts = (corpus.train, corpus.test)

  def compute():
    out = []
    for part in parts:
      smask = _sample_mask(part.lengths, part.waveforms.shape[-1])
      out += models.cache_features(encoder, frozen, part.waveforms, smask if use_mask else None,
                                   batch_size=config.eval_batch_size,
                                   mask_group_norm=mask_group_norm)
    return tuple(out)

  def check(arrays):  # what a stored file must be for this corpus
    rows = [len(p.lengths) for p in parts for _ in (0, 1)]
    if len(arrays) != 4 or [a.shape[0] for a in arrays] != rows:
      return f"arrays {[a.shape for a in arrays]}, expected {rows} rows"
    return None

  key = _digest(corpus.train.waveforms, corpus.train.lengths, corpus.test.waveforms,
                corpus.test.lengths, *jax.tree.leaves(frozen)) + json.dumps(
                    encoder.to_hf_dict(), sort_keys=True, default=str) + str(
                        (use_mask, mask_group_norm, jax.__version__, jax.default_backend(),
                         feature_store.source_digest(feature_cache, wav2vec2, modules)))
  folder = feature_store.resolve(config.feature_cache)
  return _memo("features", key, lambda: feature_store.load_or_make(folder, key, compute, check))


def federated_data(config: ml_collections.ConfigDict, encoder: EncoderConfig, frozen: dict,
                   corpus: Corpus) -> FederatedData:
  """Client datasets as the engine consumes them. With a frozen feature encoder the conv
  features of every utterance (clients and test set) are computed once (utterance_features) and
  gathered into the clients' padded rows."""
  task = task_of(config)
  cd = partition_clients(config, corpus.train)
  summary = partition.summary(cd, task.num_outputs(config, corpus))
  use_mask = uses_mask(config, encoder)
  if config.model.freeze_feature_encoder:
    feats, fmask, tfeats, tmask = utterance_features(config, encoder, frozen, corpus)
    real = cd.indices >= 0
    rows = np.maximum(cd.indices, 0)
    # padding rows: zero features, frame mask as the CNN gives a silent clip (masked out anyway)
    cfeats = np.where(real[..., None, None], feats[rows], 0.0).astype(feats.dtype)
    cmask = np.where(real[..., None], fmask[rows], not use_mask)
    clients = fl.ClientData(cfeats, cmask, cd.labels, cd.example_mask)
  else:
    smask = _sample_mask(cd.lengths, cd.waveforms.shape[-1])
    test_smask = _sample_mask(corpus.test.lengths, corpus.test.waveforms.shape[-1])
    ones = np.ones_like(smask)
    clients = fl.ClientData(cd.waveforms, smask if use_mask else ones, cd.labels,
                            cd.example_mask)
    tfeats, tmask = corpus.test.waveforms, test_smask if use_mask else np.ones_like(test_smask)
  # Utterances of different lengths are padded to the longest (<= data.max_seconds) and masked:
  # the share of real audio says what bucketing by length could save at most.
  lengths = np.asarray(cd.lengths)[np.asarray(cd.example_mask)]
  summary["audio_fill"] = float(lengths.sum() / max(lengths.size * cd.waveforms.shape[-1], 1))
  return FederatedData(clients, tfeats, tmask, task.labels(corpus.test), summary)


def client_optimizer(c: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The client's optax optimizer; with `head_learning_rate` set, the exit heads (the tree's
  "heads") get that rate and the backbone `learning_rate` (freshly initialised heads on a
  pretrained backbone, as SUPERB's downstream heads)."""
  def make(lr):
    if c.name == "sgd":
      return optax.sgd(lr)
    if c.name == "momentum":
      return optax.sgd(lr, momentum=c.momentum)
    if c.name == "adam":
      return optax.adam(lr)
    if c.name == "adamw":
      return optax.adamw(lr, weight_decay=c.weight_decay)
    raise ValueError(f"unknown client optimizer {c.name!r}")
  if c.head_learning_rate is None:
    return make(c.learning_rate)
  return optax.multi_transform(
      {"heads": make(c.head_learning_rate), "backbone": make(c.learning_rate)},
      lambda tree: {k: jax.tree.map(lambda _, k=k: "heads" if k == "heads" else "backbone", v)
                    for k, v in tree.items()})


def lr_schedule(config: ml_collections.ConfigDict) -> fl.WarmupCosine | None:
  """The client learning rate over the run's rounds (None: constant)."""
  c = config.client_optimizer
  if c.schedule == "constant":
    return None
  return fl.WarmupCosine(c.warmup_rounds, config.rounds, c.final_fraction)


def client_depths(config: ml_collections.ConfigDict, encoder: EncoderConfig, num_clients: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(depth [M], tier index [M]) of every client; explicit depths have tier -1."""
  exits = tuple(config.model.exits)
  if config.client_depths is not None:
    d = fl.explicit_depths(config.client_depths, exits, encoder.num_hidden_layers)
    if len(d) != num_clients:
      raise ValueError(f"client_depths lists {len(d)} depths for {num_clients} clients")
    return d, np.full(num_clients, -1)
  tiers = [fl.Tier(f"tier{i}", t["fraction"], t["max_depth"], t["speed"])
           for i, t in enumerate(config.tiers)]
  tier_of = fl.tiers.assign_tiers(num_clients, tiers, config.seed)
  return np.array([tiers[i].max_depth for i in tier_of], np.int32), tier_of


def round_spec(config: ml_collections.ConfigDict, encoder: EncoderConfig,
               depth_levels: tuple[int, ...]) -> fl.RoundSpec:
  so = config.server_optimizer
  task = task_of(config)
  model = SpeechExitModel(encoder, tuple(config.model.exits),
                          train_feature_encoder=not config.model.freeze_feature_encoder,
                          head=task.head, mask_group_norm=task.mask_padding)
  client = fl.ClientSpec(model, optimizer=client_optimizer(config.client_optimizer),
                         objective=task.objective_for(config),
                         loss=LOSS_NAMES[config.loss], local_epochs=config.local_epochs,
                         local_steps=config.local_steps, batch_size=config.batch_size,
                         prox_mu=config.fedprox_mu, distill_weight=config.distill_weight,
                         distill_temperature=config.distill_temperature,
                         time_mask_prob=config.time_mask_prob,
                         time_mask_span=config.time_mask_span,
                         lr_schedule=lr_schedule(config))
  chunk = None if config.chunk_size == "auto" else int(config.chunk_size)
  return fl.RoundSpec(client, fl.server_optimizer(so.name, so.learning_rate, momentum=so.momentum,
                                                  b1=so.b1, b2=so.b2, eps=so.eps),
                      weighting=config.weighting, depth_levels=depth_levels, chunk_size=chunk)
