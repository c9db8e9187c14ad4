"""HuBERT-style masked-prediction pretraining of a backbone on unlabelled audio.

The paper fine-tunes a self-supervised backbone; offline there is none to download, so the
embedded default starts from one made here (`fedexit pretrain`, shipped as `builtin:small_ssl`):
HuBERT's first iteration (Hsu et al., 2021) on the `small` preset. Targets are k-means clusters of
MFCC frames, computed at the conv encoder's 20 ms frame rate; spans of frames are replaced by a
learned mask embedding and the model predicts every frame's cluster, masked frames at full
weight and unmasked ones at `unmasked_weight`. The loss is taken at every exit layer (3/6/9/12),
not only the last, so the shallow layers that low-tier clients keep are pretrained for prediction
too. No labels are read: the audio is a synthetic corpus from another seed, so its speakers are
not the default run's.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedexit_jax.models import wav2vec2
from fedexit_jax.models.config import EncoderConfig

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
BUILTIN = {"small_ssl": Path(__file__).parent / "assets" / "small_ssl",
           # the first shipped backbone: loss at every exit layer, unmasked frames at weight 0.5
           "small_ssl_exits": Path(__file__).parent / "assets" / "small_ssl_exits"}


@dataclasses.dataclass(frozen=True)
class PretrainSpec:
  exits: tuple[int, ...] = (3, 6, 9, 12)  # layers whose output predicts the targets
  num_clusters: int = 64  # k-means codebook size of the MFCC targets
  mask_prob: float = 0.1  # probability that a frame starts a masked span
  mask_span: int = 5  # frames per masked span
  unmasked_weight: float = 0.5  # loss weight of unmasked frames (masked frames: 1)
  steps: int = 1500
  batch_size: int = 32
  learning_rate: float = 1e-3
  warmup_steps: int = 100


def resolve_builtin(name: str) -> Path:
  """'builtin:small_ssl' -> the checkpoint folder shipped in the package."""
  key = name[len(BUILTIN_PREFIX):]
  if key not in BUILTIN:
    raise ValueError(f"unknown built-in checkpoint {name!r}; choose one of "
                     f"{[BUILTIN_PREFIX + k for k in BUILTIN]}")
  path = BUILTIN[key]
  if not (path / "params").is_dir():
    raise FileNotFoundError(f"built-in checkpoint {name!r} is missing from {path}; reinstall the "
                            "package or remake it with `fedexit pretrain`")
  return path


# ---- targets -------------------------------------------------------------------------------------

def mfcc_frames(waveforms: np.ndarray, config: EncoderConfig) -> np.ndarray:
  """[N, S] audio -> [N, T, 39] MFCC + deltas + delta-deltas, one row per conv-encoder frame
  (25 ms windows at the encoder's hop), standardised per coefficient."""
  import librosa  # pylint: disable=import-outside-toplevel

  hop = int(round(16000 / config.frame_rate))
  m = librosa.feature.mfcc(y=np.asarray(waveforms, np.float32), sr=16000, n_mfcc=13, n_fft=400,
                           hop_length=hop, center=False, n_mels=40)
  feats = np.concatenate([m, librosa.feature.delta(m, order=1), librosa.feature.delta(m, order=2)],
                         axis=-2).transpose(0, 2, 1)
  t = config.num_frames(waveforms.shape[-1])
  if feats.shape[1] != t:
    raise ValueError(f"MFCC frames ({feats.shape[1]}) do not line up with the conv encoder's "
                     f"({t}); the encoder's hop is {hop} samples")
  mean, std = feats.mean(axis=(0, 1)), feats.std(axis=(0, 1)) + 1e-6
  return ((feats - mean) / std).astype(np.float32)


def cluster_targets(frames: np.ndarray, num_clusters: int, seed: int,
                    max_fit_frames: int = 50_000) -> np.ndarray:
  """k-means codes [N, T] of MFCC frames [N, T, D] (fit on a random subset of frames)."""
  from sklearn.cluster import MiniBatchKMeans  # pylint: disable=import-outside-toplevel

  flat = frames.reshape(-1, frames.shape[-1])
  rng = np.random.default_rng(seed)
  fit = flat[rng.permutation(len(flat))[:max_fit_frames]]
  km = MiniBatchKMeans(num_clusters, random_state=seed, n_init=3, batch_size=4096).fit(fit)
  return km.predict(flat).astype(np.int32).reshape(frames.shape[:2])


def span_mask(rng: jax.Array, shape: tuple[int, int], prob: float, span: int) -> jax.Array:
  """[B, T] bool: each frame starts a masked span of `span` frames with probability `prob`."""
  starts = jax.random.bernoulli(rng, prob, shape).astype(jnp.float32)
  covered = jax.lax.reduce_window(jnp.pad(starts, ((0, 0), (span - 1, 0))), 0.0, jax.lax.add,
                                  (1, span), (1, 1), "VALID")
  return covered > 0


# ---- model and loss ------------------------------------------------------------------------------

def init_heads(rng: jax.Array, config: EncoderConfig, spec: PretrainSpec) -> dict[str, Any]:
  """Mask embedding [H] and one linear cluster classifier per exit layer ([E, H, K], [E, K])."""
  k_emb, k_proj = jax.random.split(rng)
  h, e = config.hidden_size, len(spec.exits)
  return {"mask_embedding": jax.random.uniform(k_emb, (h,)),
          "kernel": jax.random.normal(k_proj, (e, h, spec.num_clusters)) * h ** -0.5,
          "bias": jnp.zeros((e, spec.num_clusters))}


def loss_fn(params: dict, heads: dict, waveforms: jax.Array, targets: jax.Array, rng: jax.Array,
            config: EncoderConfig, spec: PretrainSpec) -> tuple[jax.Array, dict]:
  """Weighted cross-entropy of the cluster codes at every exit; also the masked-frame accuracy."""
  feats, _ = wav2vec2.extract_features(config, params, waveforms)
  mask = span_mask(rng, feats.shape[:2], spec.mask_prob, spec.mask_span)
  hidden = wav2vec2.encode_features(config, params, feats, None, max(spec.exits),
                                    time_mask=mask, mask_embedding=heads["mask_embedding"])
  h = hidden[jnp.asarray(spec.exits) - 1]  # [E, B, T, H]
  logits = jnp.einsum("ebth,ehk->ebtk", h, heads["kernel"]) + heads["bias"][:, None, None]
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.broadcast_to(targets, logits.shape[:-1]))  # [E, B, T]
  w = jnp.broadcast_to(jnp.where(mask, 1.0, spec.unmasked_weight), ce.shape)
  loss = jnp.sum(ce * w) / jnp.sum(w)  # mean over exits and weighted frames
  hit = (jnp.argmax(logits, -1) == targets[None]) & mask[None]
  acc = jnp.sum(hit, axis=(1, 2)) / jnp.maximum(jnp.sum(mask), 1)
  return loss, {"loss": loss, "masked_accuracy": acc}


def make_optimizer(spec: PretrainSpec) -> optax.GradientTransformation:
  sched = optax.warmup_cosine_decay_schedule(0.0, spec.learning_rate, spec.warmup_steps,
                                             max(spec.steps, spec.warmup_steps + 1))
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=0.01))


def make_train_step(config: EncoderConfig, spec: PretrainSpec, opt: optax.GradientTransformation):
  @jax.jit
  def step(state, waveforms, targets, rng):
    (params, heads), opt_state = state
    grads, metrics = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)(
        params, heads, waveforms, targets, rng, config, spec)
    updates, opt_state = opt.update(grads, opt_state, (params, heads))
    return (optax.apply_updates((params, heads), updates), opt_state), metrics
  return step


def pretrain(config: EncoderConfig, waveforms: np.ndarray, spec: PretrainSpec, seed: int = 0,
             progress: bool = True) -> tuple[dict, dict[str, Any]]:
  """Pretrains a freshly initialised backbone on `waveforms` [N, S]; -> (params, report)."""
  if max(spec.exits) > config.num_hidden_layers:
    raise ValueError(f"exits {spec.exits} go beyond the backbone's "
                     f"{config.num_hidden_layers} layers")
  t0 = time.time()
  targets = cluster_targets(mfcc_frames(waveforms, config), spec.num_clusters, seed)
  t_targets = time.time() - t0
  t0 = time.time()
  k_params, k_heads, k_loop = jax.random.split(jax.random.PRNGKey(seed), 3)
  params = wav2vec2.init_params(config, k_params)
  heads = init_heads(k_heads, config, spec)
  opt = make_optimizer(spec)
  state = ((params, heads), opt.init((params, heads)))
  step = make_train_step(config, spec, opt)
  order_rng = np.random.default_rng(seed)
  n = len(waveforms)
  history = []
  it = range(spec.steps)
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    it = tqdm(it, desc="pretrain", unit="step")
  perm, pos = order_rng.permutation(n), 0
  for i in it:
    if pos + spec.batch_size > n:
      perm, pos = order_rng.permutation(n), 0
    idx = np.sort(perm[pos:pos + spec.batch_size])
    pos += spec.batch_size
    state, m = step(state, waveforms[idx], targets[idx], jax.random.fold_in(k_loop, i))
    if i % 50 == 0 or i == spec.steps - 1:
      m = jax.device_get(m)
      if not np.isfinite(m["loss"]):
        raise FloatingPointError(f"pretraining diverged at step {i}: loss {m['loss']}")
      history.append({"step": i, "loss": float(m["loss"]),
                      "masked_accuracy": [float(a) for a in m["masked_accuracy"]]})
      if progress:
        it.set_postfix(loss=f"{m['loss']:.3f}", acc=f"{m['masked_accuracy'][-1]:.3f}")
  (params, _), _ = state
  report = {"spec": dataclasses.asdict(spec), "seed": seed, "num_utterances": n,
            "target_seconds": round(t_targets, 1), "train_seconds": round(time.time() - t0, 1),
            "history": history}
  return params, report


# ---- command line --------------------------------------------------------------------------------

def add_arguments(parser) -> None:
  d = PretrainSpec()
  parser.add_argument("--out", required=True, metavar="DIR",
                      help="new folder for the checkpoint (usable as --config.model.checkpoint)")
  parser.add_argument("--corpus", default=None, metavar="DIR",
                      help="a Speech Commands-layout folder whose audio (all of it, labels "
                           "unused) is the pretraining data; default: a synthetic corpus made "
                           "from --corpus-seed, whose speakers differ from the default run's")
  parser.add_argument("--corpus-seed", type=int, default=1,
                      help="seed of the synthetic pretraining corpus (the default run uses 0)")
  parser.add_argument("--speakers", type=int, default=96, help="speakers in that corpus")
  parser.add_argument("--preset", default="small", help="encoder preset to pretrain")
  parser.add_argument("--steps", type=int, default=d.steps)
  parser.add_argument("--batch-size", type=int, default=d.batch_size)
  parser.add_argument("--learning-rate", type=float, default=d.learning_rate)
  parser.add_argument("--num-clusters", type=int, default=d.num_clusters)
  parser.add_argument("--seed", type=int, default=0, help="init, k-means and batch order")


def main(args) -> int:
  from fedexit_jax import config_utils, runtime  # pylint: disable=import-outside-toplevel
  from fedexit_jax.convert import saved  # pylint: disable=import-outside-toplevel
  from fedexit_jax.data import speech_commands, synth  # pylint: disable=import-outside-toplevel
  from fedexit_jax.models import config as model_config  # pylint: disable=import-outside-toplevel

  runtime.use_compilation_cache("auto")  # before the step compiles
  out = Path(args.out)
  if out.exists():
    raise FileExistsError(f"{out} already exists; choose a new folder")
  corpus = args.corpus
  corpus_args = {"folder": corpus}
  if corpus is None:
    corpus_args = dict(num_speakers=args.speakers, per_word=2, unknown_per_speaker=8,
                       seed=args.corpus_seed, val_fraction=0.0, test_fraction=0.0)
    corpus = synth.synthesize_corpus(
        config_utils.cache_root() / f"synth-pretrain-s{args.corpus_seed}-n{args.speakers}",
        **corpus_args)
  data = speech_commands.load_folder(corpus, label_set="35", silence_fraction=0.0)
  config = model_config.get_preset(args.preset)
  spec = PretrainSpec(steps=args.steps, batch_size=args.batch_size,
                      learning_rate=args.learning_rate, num_clusters=args.num_clusters)
  params, report = pretrain(config, np.asarray(data.waveforms), spec, seed=args.seed)
  saved.save_converted(out, config, params)
  report.update(corpus=corpus_args, preset=args.preset)
  (out / "pretrain.json").write_text(json.dumps(report, indent=1))
  last = report["history"][-1]
  print(f"pretrained {args.preset} for {spec.steps} steps on {report['num_utterances']} "
        f"utterances in {report['train_seconds']:.0f} s: loss {last['loss']:.3f}, masked-frame "
        f"accuracy per exit {[round(a, 3) for a in last['masked_accuracy']]}; wrote {out}")
  return 0
