"""Offline stand-ins for speaker id, emotion and ASR corpora, in the real corpora's layouts.

Synthetic, like synth.py's keyword corpus and for the same reason: so the real loaders
(voxceleb.py, iemocap.py, librispeech.py) and the whole pipeline run offline, on corpora whose
speakers differ the way real ones do. Numbers measured on them say nothing about the real data.

- `synthesize_voxceleb`: VoxCeleb1 (wav/<id>/<video>/<nnnnn>.wav, iden_split.txt, veri_test2.txt).
  Each "video" has its own room, microphone and noise, so a speaker's clips differ in channel too
  (30 speakers x 15 clips: logistic regression on MFCC statistics identifies 82% of the test
  clips, chance 3%).
- `synthesize_iemocap`: IEMOCAP (Session<N>/sentences/wav/<dialog>/<utt>.wav and
  Session<N>/dialog/EmoEvaluation/<dialog>.txt). Emotion here is only a style (pitch level and
  range, rate, loudness, spectral tilt, some harshness or breathiness) applied relative to the
  speaker's own voice, with a random intensity and spread so classes overlap; real emotion is far
  richer. Measured on 5 sessions x 60 utterances, leave-one-session-out, 4 classes (hap+exc
  merged): logistic regression on MFCC, pitch and energy statistics gets 57% (76% with features
  z-scored per speaker), the majority class 33%: learnable, not trivial.
- `synthesize_librispeech`: LibriSpeech (<split>/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac,
  <spk>-<chapter>.trans.txt, SPEAKERS.TXT), sentences from synth_text's grammar.

Speakers come from synth.make_speakers (another salt per corpus); determinism works as in
synth.py: every draw is keyed by (seed, speaker, utterance), fixed shards of speakers are spoken
each in a fresh process, and the same arguments give byte-identical files whatever `workers`.
"""
from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import logging
import math
import os
import pathlib
import shutil
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from fedexit_jax.data import audio, espeak, synth
from fedexit_jax.data import synth_text as text

log = logging.getLogger(__name__)

MANIFEST = synth.MANIFEST
_FORMAT_VERSION = 1
_SHARD_SIZE = 8          # speakers per fresh process; part of the output's definition
_MODULE = "fedexit_jax.data.synth_tasks"  # what the worker processes run
_SR = audio.SAMPLE_RATE
_BED_SECONDS = 10        # noise bed per channel, longer than any clip
_COLOURS = synth._NOISE_COLOURS[:-1]  # babble needs a crowd of eSpeak voices: keyword corpus only
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "Annie", "anika", "aunty", "belinda", "grandma",
                   "linda", "steph", "whisperf")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Andy", "croak", "michel",
                 "travis", "victor", "whisper", "adam", "benjamin", "boris", "caleb", "david", "ed",
                 "edward", "grandpa", "ian", "john", "max", "norbert", "paul", "quincy", "rob",
                 "robert", "zac")


# ---- speakers, channels, one recorded clip -------------------------------------------------------

def _speakers(n: int, seed: int, salt: int, genders: Optional[List[str]] = None) -> List[Dict]:
  """synth.make_speakers' traits; with genders, a variant and pitch that fit each ('F'/'M')."""
  spks = synth.make_speakers(n, seed, salt)
  if genders is None:
    return spks
  have = set(espeak.available_variants())
  for spk, g in zip(spks, genders):
    rng = np.random.default_rng([seed, salt, spk["index"], 0x6e])
    pool = [v for v in (FEMALE_VARIANTS if g == "F" else MALE_VARIANTS) if v in have]
    spk.update(gender=g, variant=pool[int(rng.integers(len(pool)))],
               pitch=int(rng.integers(40, 86) if g == "F" else rng.integers(10, 56)))
  return spks


def _channel(rng: np.random.Generator, tilt: float) -> Dict:
  """A recording setup: room (synth._room_ir's keys), microphone tilt, noise colour, SNR offset."""
  return dict(rt60=float(rng.uniform(0.05, 0.5)), direct_ratio_db=float(rng.uniform(0, 12)),
              room_seed=int(rng.integers(2**31)), tilt=float(np.clip(tilt, -0.9, 0.95)),
              noise=_COLOURS[int(rng.integers(len(_COLOURS)))],
              snr_offset_db=float(rng.uniform(-5, 5)))


def _read_room(rng: np.random.Generator) -> Dict:
  """LibriSpeech's "clean" audiobooks are read close to the microphone: a short, weak room tail
  (rt60 0.05-0.2 s, direct path 8-16 dB above it), not the far-field rooms of the other corpora."""
  return dict(rt60=float(rng.uniform(0.05, 0.2)), direct_ratio_db=float(rng.uniform(8, 16)))


def _bed(ch: Dict) -> np.ndarray:
  return synth._coloured_noise(np.random.default_rng(ch["room_seed"] + 1), ch["noise"],
                               _BED_SECONDS * _SR)


def _record(x: np.ndarray, ch: Dict, ir: np.ndarray, bed: np.ndarray, rng: np.random.Generator,
            speech_db: float, noise_db: float, bounds: Tuple[float, float]) -> np.ndarray:
  """Speech -> microphone tilt -> room -> level -> clip of its length plus random margins,
  clamped to `bounds` seconds (longer speech cropped at random) -> noise -> never clipping.
  speech_db, noise_db: RMS levels relative to synth's reference speech level."""
  x = synth._convolve(synth._tilt(x, ch["tilt"]), ir)[:len(x) + len(ir) // 4]
  x = x * (synth._SPEECH_RMS * 10 ** (speech_db / 20) / (np.sqrt(np.mean(x ** 2)) + 1e-9))
  n = int(np.clip(len(x) + int(rng.uniform(0.1, 0.7) * _SR), bounds[0] * _SR, bounds[1] * _SR))
  if len(x) > n:
    start = int(rng.integers(len(x) - n + 1))
    x = x[start:start + n]
  clip = np.zeros(n, np.float32)
  offset = int(rng.integers(n - len(x) + 1))
  clip[offset:offset + len(x)] = x
  start = int(rng.integers(len(bed) - n))
  clip += bed[start:start + n] * (synth._SPEECH_RMS * 10 ** (noise_db / 20))
  peak = float(np.max(np.abs(clip)))
  return clip * (0.99 / peak) if peak > 0.99 else clip


def _write(path: str, x: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if not path.endswith(".flac"):
    audio.write_wav(path, x)
    return
  import soundfile as sf  # pylint: disable=import-outside-toplevel
  buf = io.BytesIO()
  sf.write(buf, np.round(np.clip(x, -1, 1) * 32767).astype(np.int16), _SR, format="FLAC",
           subtype="PCM_16")
  with open(path, "wb") as f:
    f.write(buf.getvalue())


# ---- caching, shards -----------------------------------------------------------------------------

def _open(out_dir, args: Dict, overwrite: bool) -> Tuple[pathlib.Path, Optional[pathlib.Path]]:
  """(out, None) to reuse a corpus made with `args`; else (out, a fresh temporary folder)."""
  out = pathlib.Path(out_dir).absolute()
  manifest = out / MANIFEST
  if manifest.is_file():
    old = json.loads(manifest.read_text())
    if old.get("arguments") == args and _count_audio(out) == old.get("num_utterances"):
      log.info("reusing the synthetic corpus in %s", out)
      return out, None
    if not overwrite:
      raise FileExistsError(f"{out} holds a synthetic corpus made with other arguments "
                            f"({old.get('arguments')}); pass overwrite=True or another folder")
  elif out.exists() and any(out.iterdir()) and not overwrite:
    raise FileExistsError(f"{out} exists and is not an empty folder or a synthetic corpus")
  tmp = out.with_name(out.name + f".tmp{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir(parents=True)
  return out, tmp


def _close(tmp: pathlib.Path, out: pathlib.Path, args: Dict, num: int, speakers: List[Dict],
           t0: float) -> pathlib.Path:
  (tmp / MANIFEST).write_text(json.dumps(dict(
      arguments=args,
      arguments_sha1=hashlib.sha1(json.dumps(args, sort_keys=True).encode()).hexdigest(),
      num_utterances=num, speakers=speakers, seconds=round(time.time() - t0, 2)), indent=1))
  if out.exists():
    shutil.rmtree(out)
  os.replace(tmp, out)
  log.info("wrote %d utterances of %s to %s in %.1f s", num, args["corpus"], out,
           time.time() - t0)
  return out


def _count_audio(root: pathlib.Path) -> int:
  return sum(1 for _, _, files in os.walk(root) for f in files if f.endswith((".wav", ".flac")))


def _run(kind: str, tasks: List, sizes: List[int], workers: Optional[int],
         progress: Optional[bool]) -> List:
  """Every shard's rows, in shard order."""
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
  jobs = [(kind, [i] + list(t)) for i, t in enumerate(tasks)]
  results = {}
  with tqdm(total=sum(sizes), desc=f"synthesising {kind}", unit="utt",
            disable=None if progress is None else not progress) as bar:
    for _, (i, rows) in synth._run_in_fresh_processes(jobs, workers, _MODULE):
      results[i] = rows
      bar.update(sizes[i])
  return [r for i in range(len(tasks)) for r in results[i]]


def _shards(speakers: List[Dict]) -> List[List[Dict]]:
  return [speakers[i:i + _SHARD_SIZE] for i in range(0, len(speakers), _SHARD_SIZE)]


# ---- VoxCeleb1: speaker identification and verification ------------------------------------------

def _video_id(seed: int, spk: str, k: int) -> str:
  digest = hashlib.sha1(f"fedexit-vox:{seed}:{spk}:{k}".encode()).digest()
  return base64.urlsafe_b64encode(digest).decode()[:11]  # a YouTube-like id


def _vox_plan(spk: Dict, seed: int, per_speaker: int) -> List[Tuple[int, str]]:
  """(video index, relative path) of a speaker's clips: 2-5 videos, each used at least once."""
  rng = np.random.default_rng([seed, spk["index"], 0x71d])
  videos = min(int(rng.integers(2, 6)), per_speaker)
  which = [u if u < videos else int(rng.integers(videos)) for u in range(per_speaker)]
  count = [0] * videos
  plan = []
  for v in which:
    count[v] += 1
    plan.append((v, f"wav/{spk['id']}/{_video_id(seed, spk['id'], v)}/{count[v]:05d}.wav"))
  return plan


def _vox_shard(out: str, speakers: List[Dict], seed: int, per_speaker: int,
               snr_db: List[float]) -> List[str]:
  rows = []
  for spk in speakers:
    plan = _vox_plan(spk, seed, per_speaker)
    channels = {}
    for u, (v, rel) in enumerate(plan):
      if v not in channels:  # the video's room, microphone (half the speaker's tilt) and noise
        ch_rng = np.random.default_rng([seed, spk["index"], v, 0xc4])
        ch = _channel(ch_rng, 0.5 * spk["tilt"] + ch_rng.uniform(-0.5, 0.5))
        channels[v] = (ch, synth._room_ir(ch), _bed(ch))
      ch, ir, bed = channels[v]
      rng = np.random.default_rng([seed, spk["index"], u, 0x5a])
      voice = dict(spk, pitch_range=int(np.clip(spk["pitch_range"] * np.exp(rng.normal(0, 0.15)),
                                                0, 99)))
      x = synth._speak(text.phrase(rng), voice, rng)
      level = spk["level_db"] + rng.uniform(-4, 4)
      snr = rng.uniform(*snr_db) + ch["snr_offset_db"]
      _write(os.path.join(out, rel), _record(x, ch, ir, bed, rng, level, level - snr, (1.5, 3.0)))
      rows.append(rel)
  return rows


def _verification_trials(files: Dict[str, List[str]], num_trials: int,
                         rng: np.random.Generator) -> List[Tuple[int, str, str]]:
  """Balanced trials: half same-speaker pairs, half different-speaker pairs, none repeated."""
  spks = sorted(files)
  same = [p for s in spks for p in itertools.combinations(files[s], 2)]
  sizes = [len(files[s]) for s in spks]
  n_diff = (sum(sizes) ** 2 - sum(k * k for k in sizes)) // 2
  n = min(num_trials // 2, len(same), n_diff)
  trials = [(1,) + same[int(i)] for i in rng.choice(len(same), n, replace=False)]
  seen = set()
  while len(seen) < n:
    a, b = rng.choice(len(spks), 2, replace=False)
    pair = tuple(files[spks[k]][int(rng.integers(sizes[k]))] for k in (a, b))
    if pair not in seen and pair[::-1] not in seen:
      seen.add(pair)
      trials.append((0,) + pair)
  return [trials[int(i)] for i in rng.permutation(len(trials))]


def synthesize_voxceleb(out_dir, num_speakers: int = 100, per_speaker: int = 20,
                        verification_speakers: int = 20, num_trials: int = 4000, seed: int = 0,
                        dev_fraction: float = 0.0, test_fraction: float = 0.2,
                        snr_db: Tuple[float, float] = (5.0, 25.0), workers: Optional[int] = None,
                        overwrite: bool = False, progress: Optional[bool] = None) -> pathlib.Path:
  """Writes (or reuses) a VoxCeleb1-layout corpus in `out_dir`; returns its path.

  num_speakers identification speakers (ids id10001...) with per_speaker clips of 1.5-3 s, each a
  random 2-5 word phrase; iden_split.txt splits each speaker's clips at random (1 train, 2 dev,
  3 test, in dev_/test_fraction proportions). veri_test2.txt: up to num_trials balanced trials
  among verification_speakers further speakers, none in iden_split.txt. Reuse and overwrite rules
  as synth.synthesize_corpus.
  """
  if num_speakers < 1 or per_speaker < 2 or verification_speakers < 0:
    raise ValueError(f"need num_speakers >= 1, per_speaker >= 2, verification_speakers >= 0; "
                     f"got {num_speakers}, {per_speaker}, {verification_speakers}")
  n_test = max(1, round(test_fraction * per_speaker))
  n_dev = round(dev_fraction * per_speaker)
  if not (0 <= dev_fraction and 0 < test_fraction and n_test + n_dev < per_speaker):
    raise ValueError(f"bad split fractions for {per_speaker} clips per speaker: dev "
                     f"{dev_fraction}, test {test_fraction}")
  args = dict(corpus="voxceleb1", format=_FORMAT_VERSION, shard_size=_SHARD_SIZE,
              num_speakers=int(num_speakers), per_speaker=int(per_speaker),
              verification_speakers=int(verification_speakers), num_trials=int(num_trials),
              seed=int(seed), dev_fraction=float(dev_fraction),
              test_fraction=float(test_fraction), snr_db=[float(v) for v in snr_db])
  out, tmp = _open(out_dir, args, overwrite)
  if tmp is None:
    return out
  t0 = time.time()
  total = num_speakers + verification_speakers
  speakers = _speakers(total, seed, 0x70c)
  for spk in speakers:
    spk["id"] = f"id{10001 + spk['index']}"
  shards = _shards(speakers)
  rows = _run("voxceleb", [(str(tmp), s, seed, per_speaker, list(snr_db)) for s in shards],
              [len(s) * per_speaker for s in shards], workers, progress)
  by_speaker = {}
  for rel in rows:
    by_speaker.setdefault(rel.split("/")[1], []).append(rel[len("wav/"):])
  lines = []
  for spk in speakers[:num_speakers]:
    files = sorted(by_speaker[spk["id"]])
    order = np.random.default_rng([seed, spk["index"], 0x5e7]).permutation(len(files))
    split = {int(k): 3 if r < n_test else 2 if r < n_test + n_dev else 1
             for r, k in enumerate(order)}
    lines += [f"{split[k]} {f}\n" for k, f in enumerate(files)]
  (tmp / "iden_split.txt").write_text("".join(lines))
  veri = {s["id"]: sorted(by_speaker[s["id"]]) for s in speakers[num_speakers:]}
  trials = _verification_trials(veri, num_trials, np.random.default_rng([seed, 0x7e1]))
  (tmp / "veri_test2.txt").write_text("".join(f"{t} {a} {b}\n" for t, a, b in trials))
  return _close(tmp, out, args, len(rows), speakers, t0)


# ---- IEMOCAP: emotion ----------------------------------------------------------------------------

# code -> (pitch shift, pitch-range factor, rate factor, level dB, tilt shift, breathiness,
# harshness) of its full-intensity style, and the mean (valence, activation, dominance) its
# annotators would give (1-5 scale).
EMOTIONS = {
    "neu": ((0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0), (3.0, 2.5, 2.7)),
    "hap": ((12.0, 1.6, 1.1, 4.0, 0.2, 0.0, 0.05), (4.0, 3.1, 3.0)),
    "exc": ((18.0, 1.9, 1.2, 6.0, 0.3, 0.0, 0.15), (3.9, 3.6, 3.3)),
    "ang": ((8.0, 1.5, 1.15, 10.0, 0.55, 0.0, 0.35), (1.9, 3.8, 3.8)),
    "sad": ((-14.0, 0.45, 0.72, -8.0, -0.5, 0.25, 0.0), (2.0, 2.2, 2.3)),
    "fru": ((3.0, 1.15, 1.03, 3.0, 0.2, 0.05, 0.2), (2.1, 3.1, 3.1)),
}
_EMOTION_P = {"neu": 0.30, "hap": 0.11, "exc": 0.18, "ang": 0.19, "sad": 0.19, "fru": 0.03}
_TURNS = 10  # utterances per speaker per dialog
_ANNOTATOR_WORDS = dict(neu="Neutral", hap="Happiness", exc="Excited", ang="Anger",
                        sad="Sadness", fru="Frustration")


def _dialogs(session: int, per_speaker: int) -> List[Tuple[str, List[str]]]:
  """(dialog name, utterance ids in speaking order) of a session: alternately improvised and
  scripted, led by F or M, each with up to _TURNS turns per speaker, F and M alternating."""
  out = []
  for d in range(math.ceil(per_speaker / _TURNS)):
    lead, pair = "FM"[d % 2], d // 2
    kind = f"impro{pair // 2 + 1:02d}" if pair % 2 == 0 else f"script{pair // 2 + 1:02d}_1"
    name = f"Ses{session:02d}{lead}_{kind}"
    turns = min(_TURNS, per_speaker - d * _TURNS)
    order = [lead, "MF"[d % 2]] * turns
    count = {"F": 0, "M": 0}
    ids = []
    for g in order:
      ids.append(f"{name}_{g}{count[g]:03d}")
      count[g] += 1
    out.append((name, ids))
  return out


def _emotion(seed: int, utt: str) -> Tuple[str, List[float], np.random.Generator]:
  """An utterance's code, [v, a, d] and its own generator, keyed by (seed, utterance id)."""
  key = int(hashlib.sha1(f"fedexit-emo:{utt}".encode()).hexdigest()[:12], 16)
  rng = np.random.default_rng([seed, key])
  codes = list(_EMOTION_P)
  code = codes[int(rng.choice(len(codes), p=list(_EMOTION_P.values())))]
  vad = np.clip(np.round((np.asarray(EMOTIONS[code][1]) + rng.normal(0, 0.5, 3)) * 2) / 2, 1, 5)
  return code, [float(v) for v in vad], rng


def _styled(spk: Dict, code: str, rng: np.random.Generator
            ) -> Tuple[Dict, float, float, float, float]:
  """(eSpeak voice, level dB, tilt, breathiness, harshness) of one utterance: the class's style
  scaled by a random intensity (0.4-1.3: some utterances barely differ from neutral), plus
  per-utterance spread."""
  pitch, spread, rate, level, tilt, breath, harsh = (
      np.asarray(EMOTIONS[code][0]) - [0, 1, 1, 0, 0, 0, 0]) * rng.uniform(0.4, 1.3)
  voice = dict(spk, pitch=int(np.clip(spk["pitch"] + pitch + rng.normal(0, 5), 0, 99)),
               pitch_range=int(np.clip(spk["pitch_range"] * (1 + spread) * np.exp(
                   rng.normal(0, 0.2)), 0, 99)),
               rate=spk["rate"] * (1 + rate))  # synth._speak adds its own rate and pitch jitter
  return (voice, spk["level_db"] + level + rng.normal(0, 3),
          float(np.clip(spk["tilt"] + tilt + rng.normal(0, 0.15), -0.9, 0.95)), breath, harsh)


def _voice_quality(x: np.ndarray, breath: float, harsh: float,
                   rng: np.random.Generator) -> np.ndarray:
  """Harsh (tanh saturation) and breathy (bright noise following the speech envelope) voice:
  cues that do not depend on the speaker's own pitch or rate, as some real ones do not."""
  peak = float(np.max(np.abs(x))) + 1e-9
  if harsh > 0:
    g = 1 + 6 * harsh
    x = np.tanh(g * x / peak) * (peak / np.tanh(g))
  if breath > 0:
    envelope = np.convolve(np.abs(x), np.full(160, 1 / 160), mode="same")
    x = x + 2 * breath * envelope * np.diff(rng.standard_normal(len(x) + 1))
  return x.astype(np.float32)


def _iemocap_shard(out: str, speakers: List[Dict], seed: int, per_speaker: int) -> List[List]:
  """One session (two speakers, one room); rows [dialog, utt, samples]."""
  session = speakers[0]["session"]
  by_gender = {s["gender"]: s for s in speakers}
  ch = _channel(np.random.default_rng([seed, session, 0x5e5]), 0.0)
  ir, bed = synth._room_ir(ch), _bed(ch)
  rows = []
  for dialog, utts in _dialogs(session, per_speaker):
    for utt in utts:
      spk = by_gender[utt[-4]]
      code, _, rng = _emotion(seed, utt)
      voice, level_db, tilt, breath, harsh = _styled(spk, code, rng)
      x = _voice_quality(synth._speak(text.sentence(rng, short=True), voice, rng), breath, harsh,
                         rng)
      snr = rng.uniform(15, 30) + ch["snr_offset_db"]  # relative to the speaker's usual level
      y = _record(x, dict(ch, tilt=tilt), ir, bed, rng, level_db, spk["level_db"] - snr,
                  (1.0, 8.0))
      rel = f"Session{session}/sentences/wav/{dialog}/{utt}.wav"
      _write(os.path.join(out, rel), y)
      rows.append([dialog, utt, len(y)])
  return rows


def _emo_evaluation(seed: int, rows: List[List]) -> str:
  """A dialog's EmoEvaluation file: the real header, and per turn its [start - end], id, code and
  [v, a, d] line followed by made-up annotator lines, as in IEMOCAP."""
  lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"]
  rng = np.random.default_rng([seed, int(hashlib.sha1(rows[0][0].encode()).hexdigest()[:12], 16)])
  t = 0.0
  for _, utt, samples in rows:
    code, (v, a, d), _ = _emotion(seed, utt)
    start = t + rng.uniform(0.3, 2.0)
    t = start + samples / _SR
    lines.append(f"[{start:.4f} - {t:.4f}]\t{utt}\t{code}\t[{v:.4f}, {a:.4f}, {d:.4f}]\n"
                 f"C-E1:\t{_ANNOTATOR_WORDS[code]};\t()\nA-E1:\tval {round(v)}; act {round(a)}; "
                 f"dom {round(d)};\t()\n\n")
  return "".join(lines)


def synthesize_iemocap(out_dir, num_sessions: int = 5, per_speaker: int = 100, seed: int = 0,
                       workers: Optional[int] = None, overwrite: bool = False,
                       progress: Optional[bool] = None) -> pathlib.Path:
  """Writes (or reuses) an IEMOCAP-layout corpus in `out_dir`; returns its path.

  num_sessions sessions (Session1..), each with one F and one M speaker of per_speaker utterances
  in dialogs of up to 10 turns each; codes neu/hap/exc/ang/sad and ~3% fru (a class loaders drop).
  Reuse and overwrite rules as synth.synthesize_corpus.
  """
  if not (1 <= num_sessions <= 99 and per_speaker >= 1):
    raise ValueError(f"need 1 <= num_sessions <= 99 and per_speaker >= 1; got {num_sessions}, "
                     f"{per_speaker}")
  args = dict(corpus="iemocap", format=_FORMAT_VERSION, num_sessions=int(num_sessions),
              per_speaker=int(per_speaker), seed=int(seed))
  out, tmp = _open(out_dir, args, overwrite)
  if tmp is None:
    return out
  t0 = time.time()
  speakers = _speakers(2 * num_sessions, seed, 0x1e0, ["F", "M"] * num_sessions)
  for spk in speakers:
    spk["session"] = spk["index"] // 2 + 1
    spk["id"] = f"Ses{spk['session']:02d}{spk['gender']}"
  shards = [speakers[i:i + 2] for i in range(0, len(speakers), 2)]
  rows = _run("iemocap", [(str(tmp), s, seed, per_speaker) for s in shards],
              [2 * per_speaker] * len(shards), workers, progress)
  by_dialog = {}
  for row in rows:
    by_dialog.setdefault(row[0], []).append(row)
  for dialog, dialog_rows in by_dialog.items():
    path = tmp / f"Session{int(dialog[3:5])}/dialog/EmoEvaluation/{dialog}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_emo_evaluation(seed, dialog_rows))
  return _close(tmp, out, args, len(rows), speakers, t0)


# ---- LibriSpeech: ASR ----------------------------------------------------------------------------

_LIBRI_SPLITS = dict(train="train-clean-100", validation="dev-clean", test="test-clean")


def _unique_ids(n: int, seed: int, tag: str, low: int, high: int) -> List[int]:
  """n distinct LibriSpeech-like integer ids; the i-th depends only on (seed, tag, ids before)."""
  ids = []
  for i in range(n):
    k = int(hashlib.sha1(f"fedexit-libri:{seed}:{tag}:{i}".encode()).hexdigest(), 16)
    k = low + k % (high - low)
    while k in ids:
      k = low + (k - low + 1) % (high - low)
    ids.append(k)
  return ids


def _libri_shard(out: str, speakers: List[Dict], seed: int, per_speaker: int) -> List[List]:
  """Rows [relative flac path, transcript, samples]; speech is never cropped: a sentence too long
  for 6 s is redrawn shorter, then spoken faster."""
  rows = []
  for spk in speakers:
    chapters, count = spk["chapters"], {}
    for u in range(per_speaker):
      c = u * len(chapters) // per_speaker  # consecutive sentences of 1-3 chapters
      count[c] = count.get(c, -1) + 1
      if count[c] == 0:  # a chapter's recording setup: the speaker's tilt, its own room and noise
        ch = _channel(np.random.default_rng([seed, spk["index"], c, 0xc4]), spk["tilt"])
        ch.update(_read_room(np.random.default_rng([seed, spk["index"], c, 0x4ead])))
        ir, bed = synth._room_ir(ch), _bed(ch)
      rng = np.random.default_rng([seed, spk["index"], u, 0x11b])
      sentence, voice = text.sentence(rng), dict(spk)
      x = synth._speak(sentence, voice, rng)
      for attempt in range(8):
        if len(x) <= 5.3 * _SR:
          break
        if attempt < 3:
          sentence = text.sentence(rng, short=True)
        else:
          voice["rate"] = min(400, voice["rate"] * 1.25)
        x = synth._speak(sentence, voice, rng)
      level = spk["level_db"] + rng.uniform(-3, 3)
      snr = rng.uniform(20, 40) + spk["snr_offset_db"]
      y = _record(x, ch, ir, bed, rng, level, level - snr, (2.0, 6.0))
      name = f"{spk['id']}-{chapters[c]}-{count[c]:04d}"
      rel = f"{spk['split']}/{spk['id']}/{chapters[c]}/{name}.flac"
      _write(os.path.join(out, rel), y)
      rows.append([rel, text.transcript(sentence), len(y)])
  return rows


def synthesize_librispeech(out_dir, num_speakers: int = 60, per_speaker: int = 20, seed: int = 0,
                           val_fraction: float = 0.0, test_fraction: float = 0.2,
                           workers: Optional[int] = None, overwrite: bool = False,
                           progress: Optional[bool] = None) -> pathlib.Path:
  """Writes (or reuses) a LibriSpeech-layout corpus in `out_dir`; returns its path.

  num_speakers readers of per_speaker sentences (2-6 s, mostly 2-4) over 1-3 chapters each,
  each chapter in its own close-talk room (_read_room), as LibriSpeech's clean audiobooks;
  speakers go whole to train-clean-100, dev-clean (val_fraction) or test-clean (test_fraction),
  ranked by synth.assign_splits. Transcripts are upper case from synth_text.VOCABULARY.
  Reuse and overwrite rules as synth.synthesize_corpus.
  """
  if num_speakers < 1 or per_speaker < 1:
    raise ValueError(f"need num_speakers >= 1, per_speaker >= 1; got {num_speakers}, "
                     f"{per_speaker}")
  if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
    raise ValueError(f"bad split fractions: validation {val_fraction}, test {test_fraction}")
  args = dict(corpus="librispeech", format=_FORMAT_VERSION, room="read", shard_size=_SHARD_SIZE,
              num_speakers=int(num_speakers), per_speaker=int(per_speaker), seed=int(seed),
              val_fraction=float(val_fraction), test_fraction=float(test_fraction))
  out, tmp = _open(out_dir, args, overwrite)
  if tmp is None:
    return out
  t0 = time.time()
  genders = ["F" if np.random.default_rng([seed, i, 0x9e]).random() < 0.5 else "M"
             for i in range(num_speakers)]
  speakers = _speakers(num_speakers, seed, 0x11b, genders)
  ids = _unique_ids(num_speakers, seed, "speaker", 10, 10000)
  chapter_ids = iter(_unique_ids(3 * num_speakers, seed, "chapter", 10000, 1000000))
  for spk, k in zip(speakers, ids):
    n = min(int(np.random.default_rng([seed, spk["index"], 0xc4a]).integers(1, 4)), per_speaker)
    spk.update(id=str(k), chapters=[next(chapter_ids) for _ in range(3)][:n])  # 3 ids each:
    # a speaker's chapter ids do not depend on how many chapters the speakers before them read
  split_of = synth.assign_splits([s["id"] for s in speakers], val_fraction, test_fraction)
  for spk in speakers:
    spk["split"] = _LIBRI_SPLITS[split_of[spk["id"]]]
  shards = _shards(speakers)
  rows = _run("librispeech", [(str(tmp), s, seed, per_speaker) for s in shards],
              [len(s) * per_speaker for s in shards], workers, progress)
  by_chapter = {}
  for rel, words, _ in rows:
    by_chapter.setdefault(os.path.dirname(rel), []).append(
        f"{os.path.basename(rel)[:-5]} {words}\n")
  for folder, lines in by_chapter.items():
    spk, chapter = folder.split("/")[1:]
    (tmp / folder / f"{spk}-{chapter}.trans.txt").write_text("".join(sorted(lines)))
  minutes = {}
  for rel, _, samples in rows:
    minutes[rel.split("/")[1]] = minutes.get(rel.split("/")[1], 0) + samples / _SR / 60
  (tmp / "SPEAKERS.TXT").write_text(
      ";ID  |SEX| SUBSET           |MINUTES| NAME\n" + "".join(
          f"{s['id']:<5}| {s['gender']} | {s['split']:<17}| {minutes[s['id']]:5.2f} | "
          f"Synthetic Reader {s['index']}\n" for s in sorted(speakers, key=lambda s: int(s["id"]))))
  return _close(tmp, out, args, len(rows), speakers, t0)


# ---- worker processes ----------------------------------------------------------------------------

_SHARD_FNS = dict(voxceleb=_vox_shard, iemocap=_iemocap_shard, librispeech=_libri_shard)

if __name__ == "__main__":
  _index, *_task = json.loads(sys.argv[2])
  sys.stdout.write(json.dumps([_index, _SHARD_FNS[sys.argv[1]](*_task)]))
