"""HuBERT-style masked-prediction pretraining of a backbone on unlabelled audio.

The paper fine-tunes a self-supervised backbone; offline there is none to download, so the
embedded default starts from one made here (`fedexit pretrain --recipe exits`, shipped as
`builtin:small_ssl`; the default recipe's result ships as `builtin:small_ssl_hubert`).
Targets are k-means clusters of MFCC frames at the conv encoder's 20 ms frame rate; spans of
frames are replaced by a learned mask embedding and the model predicts the frames' clusters.
Two recipes (`PretrainSpec.recipe`, `RECIPES`):

- "hubert" (default): HuBERT Base iteration 1 as fairseq's HubertModel does it. 100 clusters;
  the LAST layer only predicts; loss on masked frames only; logits are the cosine similarity of
  `final_proj(h)` with learned code embeddings (`label_embs_concat`), divided by 0.1. The mask
  is fairseq's `compute_mask_indices` (see `hubert_span_mask`): 8% of frames start a span of 10,
  so 58% of a 1 s clip is masked. final_proj is 64 wide (fairseq: 256 for a 768-wide Base).
  Left out: the feature penalty, dropout/layer drop, and fairseq's trimming of every row to the
  batch's smallest masked count.
- "exits": what `builtin:small_ssl` (alias `builtin:small_ssl_exits`) was made with: a linear softmax classifier at every
  exit layer (3/6/9/12), unmasked frames at weight 0.5, 64 clusters, Bernoulli(0.1) starts of
  5-frame spans. It makes every layer about equally useful (a linear probe of the keyword task
  scores 82-85% at each of layers 1-12), which flattens the depth trade-off the paper studies.
  It stays the default run's backbone because at this scale "hubert" is much weaker (probe
  67-71% at every layer against 82-85%; on the earlier 140-speaker default corpus the default
  run ended at 42.6% / 33.4% error against 20.1% / 16.8%).

No labels are read: the audio is a synthetic corpus from another seed, so its speakers are not
the default run's. It is 1 s keyword clips (Speech Commands layout) or, for a backbone meant for
sentences, the ASR grammar's sentences (LibriSpeech layout) cut into fixed windows (`windows`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedexit_jax.models import wav2vec2
from fedexit_jax.models.config import EncoderConfig

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PretrainSpec:
  recipe: str = "hubert"  # "hubert": cosine logits, masked frames; "exits": linear softmax heads
  exits: tuple[int, ...] = (12,)  # layers whose output predicts the targets
  num_clusters: int = 100  # k-means codebook size of the MFCC targets
  mask_prob: float = 0.08  # fraction of frames that start a masked span (fairseq: 0.8 / span)
  mask_span: int = 10  # frames per masked span
  unmasked_weight: float = 0.0  # loss weight of unmasked frames (masked frames: 1)
  final_dim: int = 64  # "hubert": width of final_proj and the code embeddings
  logit_temp: float = 0.1  # "hubert": cosine similarity / logit_temp
  steps: int = 1500
  batch_size: int = 32
  learning_rate: float = 1e-3
  warmup_steps: int = 100


RECIPES = {
    "hubert": PretrainSpec(),
    "exits": PretrainSpec(recipe="exits", exits=(3, 6, 9, 12), num_clusters=64, mask_prob=0.1,
                          mask_span=5, unmasked_weight=0.5),
}


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


def _cover(starts: jax.Array, span: int) -> jax.Array:
  """[B, T] span starts -> [B, T] bool: frames t..t+span-1 of every start t."""
  covered = jax.lax.reduce_window(jnp.pad(starts.astype(jnp.float32), ((0, 0), (span - 1, 0))),
                                  0.0, jax.lax.add, (1, span), (1, 1), "VALID")
  return covered > 0


def span_mask(rng: jax.Array, shape: tuple[int, int], prob: float, span: int) -> jax.Array:
  """[B, T] bool ("exits" recipe): each frame starts a `span`-frame span with probability `prob`
  (spans may run off the end)."""
  return _cover(jax.random.bernoulli(rng, prob, shape), span)


def hubert_span_mask(rng: jax.Array, shape: tuple[int, int], prob: float, span: int,
                     min_masks: int = 2) -> jax.Array:
  """[B, T] bool ("hubert" recipe), fairseq's `compute_mask_indices` with HuBERT's settings.

  fairseq's mask_prob (0.8 for HuBERT Base) counts spans, not frames: a batch draws
  num = max(min_masks, floor(0.8 * T / span + u)), u ~ U[0, 1), and every row picks `num`
  distinct starts among the T - span positions whose span fits. `prob` here is that count per
  frame, 0.8 / 10 = 0.08 (the HuBERT paper's "p = 8%"). Spans overlap, so the masked fraction is
  below prob * span: 58% of a 1 s clip's 49 frames (tests/test_pretrain.py derives it). Not
  done: fairseq's random trimming of each row to the batch's smallest masked count.
  """
  b, t = shape
  m = max(t - span, 1)
  k_num, k_pos = jax.random.split(rng)
  num = jnp.floor(prob * t + jax.random.uniform(k_num))
  num = jnp.clip(num, min_masks, m)
  ranks = jnp.argsort(jnp.argsort(jax.random.uniform(k_pos, (b, m)), axis=1), axis=1)
  starts = jnp.pad(ranks < num, ((0, 0), (0, t - m)))
  return _cover(starts, span)


def windows(waveforms: np.ndarray, lengths: np.ndarray, size: int) -> np.ndarray:
  """Fixed-length pretraining rows [M, size] from utterances of any length ([N, S] padded,
  `lengths` real samples): each utterance's back-to-back `size`-sample windows from its start,
  plus one ending at its last sample when the leftover is at least half a window (it overlaps the
  one before). Utterances shorter than `size` are left out: the pretraining step has no padding
  mask, and a padded row would teach the model silence."""
  rows = []
  for x, n in zip(waveforms, np.asarray(lengths)):
    n = int(n)
    starts = list(range(0, n - size + 1, size))
    if starts and n - (starts[-1] + size) >= size // 2:
      starts.append(n - size)
    rows += [x[s:s + size] for s in starts]
  if not rows:
    raise ValueError(f"every utterance is shorter than the {size}-sample window; shorten it")
  return np.stack(rows).astype(np.float32)


# ---- model and loss ------------------------------------------------------------------------------

def _check_recipe(spec: PretrainSpec) -> None:
  if spec.recipe not in RECIPES:
    raise ValueError(f"unknown pretraining recipe {spec.recipe!r}; choose one of {list(RECIPES)}")


def init_heads(rng: jax.Array, config: EncoderConfig, spec: PretrainSpec) -> dict[str, Any]:
  """Mask embedding [H] and, per predicting layer, "exits": a linear cluster classifier
  (kernel [E, H, K], bias [E, K]); "hubert": final_proj (kernel [E, H, D], bias [E, D]) and the
  code embeddings label_embs [K, D] shared by the layers (fairseq: uniform init)."""
  _check_recipe(spec)
  k_emb, k_proj, k_lab = jax.random.split(rng, 3) if spec.recipe == "hubert" else (
      *jax.random.split(rng), None)
  h, e = config.hidden_size, len(spec.exits)
  out = spec.final_dim if spec.recipe == "hubert" else spec.num_clusters
  heads = {"mask_embedding": jax.random.uniform(k_emb, (h,)),
           "kernel": jax.random.normal(k_proj, (e, h, out)) * h ** -0.5,
           "bias": jnp.zeros((e, out))}
  if spec.recipe == "hubert":
    heads["label_embs"] = jax.random.uniform(k_lab, (spec.num_clusters, spec.final_dim))
  return heads


def cosine_logits(proj: jax.Array, label_embs: jax.Array, temp: float) -> jax.Array:
  """[..., D] x [K, D] -> [..., K]: cos(proj, label_emb_k) / temp, as fairseq's compute_nce with
  every code a candidate (torch's cosine_similarity: x.y / max(|x| |y|, 1e-8))."""
  dot = jnp.einsum("...d,kd->...k", proj, label_embs)
  norms = jnp.linalg.norm(proj, axis=-1, keepdims=True) * jnp.linalg.norm(label_embs, axis=-1)
  return dot / jnp.maximum(norms, 1e-8) / temp


def logits_fn(h: jax.Array, heads: dict, spec: PretrainSpec) -> jax.Array:
  """Predicting layers' hidden states [E, B, T, H] -> cluster logits [E, B, T, K]."""
  proj = jnp.einsum("ebth,ehk->ebtk", h, heads["kernel"]) + heads["bias"][:, None, None]
  if spec.recipe == "hubert":
    return cosine_logits(proj, heads["label_embs"], spec.logit_temp)
  return proj


def loss_fn(params: dict, heads: dict, waveforms: jax.Array, targets: jax.Array, rng: jax.Array,
            config: EncoderConfig, spec: PretrainSpec) -> tuple[jax.Array, dict]:
  """Cross-entropy of the cluster codes at the predicting layers, frames weighted 1 if masked
  and `unmasked_weight` if not (averaged over layers and weight); also the masked-frame
  accuracy per predicting layer."""
  _check_recipe(spec)
  feats, _ = wav2vec2.extract_features(config, params, waveforms)
  mask_fn = hubert_span_mask if spec.recipe == "hubert" else span_mask
  mask = mask_fn(rng, feats.shape[:2], spec.mask_prob, spec.mask_span)
  hidden = wav2vec2.encode_features(config, params, feats, None, max(spec.exits),
                                    time_mask=mask, mask_embedding=heads["mask_embedding"])
  logits = logits_fn(hidden[jnp.asarray(spec.exits) - 1], heads, spec)  # [E, B, T, K]
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.broadcast_to(targets, logits.shape[:-1]))  # [E, B, T]
  w = jnp.broadcast_to(jnp.where(mask, 1.0, spec.unmasked_weight), ce.shape)
  loss = jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1e-9)  # mean over exits and weighted frames
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
  _check_recipe(spec)
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


def _machine() -> str:
  """CPU model and core count, for the record of how long pretraining took."""
  import os  # pylint: disable=import-outside-toplevel
  import platform  # pylint: disable=import-outside-toplevel
  name = platform.processor() or platform.machine()
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        name = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return f"{name}, {os.cpu_count()} cores, {jax.default_backend()}"


# ---- command line --------------------------------------------------------------------------------

def add_arguments(parser) -> None:
  d = PretrainSpec()
  parser.add_argument("--out", required=True, metavar="DIR",
                      help="new folder for the checkpoint (usable as --config.model.checkpoint)")
  parser.add_argument("--recipe", choices=sorted(RECIPES), default=d.recipe,
                      help="hubert (default): HuBERT Base iteration 1, last layer, masked frames, "
                           "cosine logits; exits: the loss at every exit layer, unmasked frames "
                           "at 0.5 (how builtin:small_ssl_exits was made)")
  parser.add_argument("--corpus", default=None, metavar="DIR",
                      help="a folder in --layout whose audio (all of it, labels and transcripts "
                           "unused) is the pretraining data; default: a synthetic corpus in that "
                           "layout made from --corpus-seed, whose speakers differ from the runs'")
  parser.add_argument("--layout", choices=LAYOUTS, default="speech_commands",
                      help="speech_commands (default): 1 s clips, the synthetic default is "
                           "keywords (how builtin:small_ssl was made); librispeech: sentences "
                           "(train-clean-100 of --corpus, or synthetic sentences of the ASR "
                           "grammar), cut into --window-seconds windows")
  parser.add_argument("--window-seconds", type=float, default=2.0,
                      help="librispeech layout: length of the pretraining windows cut from each "
                           "sentence (shorter sentences are left out)")
  parser.add_argument("--corpus-seed", type=int, default=1,
                      help="seed of the synthetic pretraining corpus (the default run uses 0)")
  parser.add_argument("--speakers", type=int, default=None,
                      help="speakers in that corpus (default: 96 keyword speakers, 100 readers)")
  parser.add_argument("--preset", default="small", help="encoder preset to pretrain")
  parser.add_argument("--steps", type=int, default=d.steps)
  parser.add_argument("--batch-size", type=int, default=d.batch_size)
  parser.add_argument("--learning-rate", type=float, default=d.learning_rate)
  parser.add_argument("--num-clusters", type=int, default=None,
                      help="k-means codebook size (default: the recipe's, 100 or 64)")
  parser.add_argument("--seed", type=int, default=0, help="init, k-means and batch order")


def spec_from_args(args, num_hidden_layers: int) -> PretrainSpec:
  """The recipe's spec with the command line's overrides; "hubert" predicts from the last layer
  of whatever preset is trained."""
  spec = RECIPES[args.recipe]
  changes = dict(steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate)
  if args.num_clusters is not None:
    changes["num_clusters"] = args.num_clusters
  if spec.recipe == "hubert":
    changes["exits"] = (num_hidden_layers,)
  return dataclasses.replace(spec, **changes)


LAYOUTS = ("speech_commands", "librispeech")


def load_audio(args) -> tuple[np.ndarray, dict]:
  """The pretraining rows [N, S] of --corpus (or the synthetic default) in --layout, and the
  corpus's description for pretrain.json."""
  from fedexit_jax import config_utils  # pylint: disable=import-outside-toplevel
  from fedexit_jax.data import (librispeech, speech_commands, synth,  # pylint: disable=import-outside-toplevel
                                synth_tasks)

  corpus, sentences = args.corpus, args.layout == "librispeech"
  corpus_args = {"folder": corpus}
  if corpus is None:
    cache = config_utils.cache_root()
    if sentences:
      n = args.speakers or 100
      corpus_args = dict(num_speakers=n, per_speaker=30, seed=args.corpus_seed,
                         test_fraction=0.0)
      corpus = synth_tasks.synthesize_librispeech(
          cache / f"synth-pretrain-asr-s{args.corpus_seed}-n{n}", **corpus_args)
    else:
      n = args.speakers or 96
      corpus_args = dict(num_speakers=n, per_word=2, unknown_per_speaker=8,
                         seed=args.corpus_seed, val_fraction=0.0, test_fraction=0.0)
      corpus = synth.synthesize_corpus(cache / f"synth-pretrain-s{args.corpus_seed}-n{n}",
                                       **corpus_args)
  corpus_args["layout"] = args.layout
  if not sentences:
    return np.asarray(speech_commands.load_folder(corpus, label_set="35",
                                                  silence_fraction=0.0).waveforms), corpus_args
  data = librispeech.load(corpus, splits=("train-clean-100",))  # a cut sentence is still audio
  size = int(round(args.window_seconds * 16000))
  corpus_args.update(window_seconds=args.window_seconds, num_sentences=len(data.lengths))
  return windows(np.asarray(data.waveforms), data.lengths, size), corpus_args


def main(args) -> int:
  from fedexit_jax import runtime  # pylint: disable=import-outside-toplevel
  from fedexit_jax.convert import saved  # pylint: disable=import-outside-toplevel
  from fedexit_jax.models import config as model_config  # pylint: disable=import-outside-toplevel

  runtime.use_compilation_cache("auto")  # before the step compiles
  out = Path(args.out)
  if out.exists():
    raise FileExistsError(f"{out} already exists; choose a new folder")
  waveforms, corpus_args = load_audio(args)
  config = model_config.get_preset(args.preset)
  spec = spec_from_args(args, config.num_hidden_layers)
  params, report = pretrain(config, waveforms, spec, seed=args.seed)
  saved.save_converted(out, config, params)
  report.update(corpus=corpus_args, preset=args.preset, machine=_machine())
  (out / "pretrain.json").write_text(json.dumps(report, indent=1))
  last = report["history"][-1]
  print(f"pretrained {args.preset} for {spec.steps} steps on {report['num_utterances']} "
        f"utterances in {report['train_seconds']:.0f} s: loss {last['loss']:.3f}, masked-frame "
        f"accuracy per predicting layer {spec.exits}: "
        f"{[round(a, 3) for a in last['masked_accuracy']]}; wrote {out}")
  return 0
