"""An offline spoken-keyword corpus from eSpeak NG, written in the Speech Commands v0.02 layout.

Synthetic, and meant for what it is: exercising the whole pipeline offline (tests, the default
federated run) with speakers that differ the way real ones do, so by-speaker partitions are
non-IID. Accuracies on it say nothing about Speech Commands.

A speaker is a fixed draw of eSpeak voice (8 English accents), variant (~50 timbres), pitch,
pitch range, speaking rate, loudness, a room (an exponentially decaying noise impulse response),
a microphone tilt (first-order filter) and a noise colour with an SNR offset; a speaker records
each keyword a varying number of times (label mix differs by speaker too). Each utterance then
jitters rate and pitch, is shifted at random inside the 1 s clip, gets a random gain and additive
noise at an SNR drawn from `snr_db`.

Every random draw comes from a generator keyed by (seed, speaker, word, repetition), and eSpeak's
own cross-utterance state is made reproducible by synthesising fixed shards of speakers each in a
fresh process (see espeak.py), so the same arguments give byte-identical files whatever the
number of workers.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from fedexit_jax.data import audio, espeak
from fedexit_jax.data import speech_commands as sc

log = logging.getLogger(__name__)

MANIFEST = "synth_manifest.json"
_FORMAT_VERSION = 2
_SHARD_SIZE = 8            # speakers per fresh worker process; part of the output's definition
_SR = audio.SAMPLE_RATE
_CLIP = _SR                # 1 s clips
_SPEECH_RMS = 0.06         # target speech level before the per-utterance gain
_NOISE_COLOURS = ("white", "pink", "brown", "hum", "tap", "babble")
_BACKGROUND_SECONDS = 30


def _speaker_id(seed: int, index: int) -> str:
  return hashlib.sha1(f"fedexit-synth:{seed}:{index}".encode()).hexdigest()[:8]


def make_speakers(num_speakers: int, seed: int, salt: int = 0x5bea) -> List[Dict]:
  """The fixed traits of each speaker; speaker i depends only on (seed, i, salt) (another salt:
  another population, as the other synthetic corpora use)."""
  variants = espeak.available_variants()
  out = []
  for i in range(num_speakers):
    rng = np.random.default_rng([seed, i, salt])
    out.append(dict(
        id=_speaker_id(seed, i), index=i,
        voice=espeak.ENGLISH_VOICES[int(rng.integers(len(espeak.ENGLISH_VOICES)))],
        variant=variants[int(rng.integers(len(variants)))],
        pitch=int(rng.integers(15, 86)), pitch_range=int(rng.integers(20, 81)),
        rate=int(rng.integers(120, 231)), level_db=float(rng.uniform(-4, 4)),
        rt60=float(rng.uniform(0.05, 0.35)), direct_ratio_db=float(rng.uniform(0, 12)),
        tilt=float(rng.uniform(-0.7, 0.9)),
        noise=_NOISE_COLOURS[int(rng.integers(len(_NOISE_COLOURS) - 1))],  # babble: background only
        snr_offset_db=float(rng.uniform(-5, 5)),
        room_seed=int(rng.integers(2**31))))
  return out


def assign_splits(speaker_ids: Sequence[str], val_fraction: float, test_fraction: float
                  ) -> Dict[str, str]:
  """Speakers ranked by a hash of their id: the first test_fraction -> test, the next
  val_fraction -> validation (exact counts, stable as speakers are added)."""
  order = sorted(speaker_ids, key=lambda s: hashlib.sha1(f"split:{s}".encode()).hexdigest())
  n_test = int(round(test_fraction * len(order)))
  n_val = int(round(val_fraction * len(order)))
  return {s: ("test" if r < n_test else "validation" if r < n_test + n_val else "train")
          for r, s in enumerate(order)}


# ---- signal helpers ------------------------------------------------------------------------------

def _coloured_noise(rng: np.random.Generator, colour: str, n: int) -> np.ndarray:
  """Unit-RMS noise of a given colour (spectral shaping in the frequency domain)."""
  if colour == "hum":
    t = np.arange(n) / _SR
    f0 = 50.0 if rng.random() < 0.5 else 60.0
    x = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3))
            for k in range(1, 8))
    x = x + 0.1 * rng.standard_normal(n)
  else:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / _SR)
    f[0] = f[1]
    if colour == "pink":
      spec /= np.sqrt(f)
    elif colour == "brown":
      spec /= f
    elif colour == "tap":  # running water: band-passed noise with a slow flutter
      spec *= np.exp(-0.5 * ((f - 2500.0) / 1200.0) ** 2)
    x = np.fft.irfft(spec, n)
    if colour == "tap":
      t = np.arange(n) / _SR
      x *= 1.0 + 0.4 * np.sin(2 * np.pi * rng.uniform(2, 6) * t)
  x = np.asarray(x, np.float64)
  return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


def _room_ir(spk: Dict) -> np.ndarray:
  rng = np.random.default_rng(spk["room_seed"])
  n = max(int(spk["rt60"] * _SR), 8)
  decay = np.exp(-6.9 * np.arange(n) / n)  # -60 dB at rt60
  tail = rng.standard_normal(n) * decay
  tail *= 10 ** (-spk["direct_ratio_db"] / 20) / (np.sqrt(np.sum(tail ** 2)) + 1e-12)
  ir = tail
  ir[0] = 1.0
  return ir.astype(np.float32)


def _tilt(x: np.ndarray, a: float) -> np.ndarray:
  """y[n] = x[n] - a x[n-1]: a > 0 brightens (pre-emphasis), a < 0 dulls."""
  y = x.copy()
  y[1:] -= a * x[:-1]
  return y


def _convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
  """Full linear convolution through the FFT (numpy only: scipy.signal takes ~2 s to import)."""
  n = len(x) + len(h) - 1
  size = 1 << (n - 1).bit_length()
  y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[:n]
  return y.astype(np.float32)


def _trim(x: np.ndarray, rel_db: float = -40.0) -> np.ndarray:
  peak = np.max(np.abs(x)) if x.size else 0.0
  idx = np.flatnonzero(np.abs(x) > peak * 10 ** (rel_db / 20))
  return x[idx[0]:idx[-1] + 1] if idx.size else x


def _speak(word: str, spk: Dict, rng: np.random.Generator) -> np.ndarray:
  """One utterance at 16 kHz, trimmed, with the per-utterance rate/pitch jitter."""
  rate = int(np.clip(spk["rate"] * np.exp(rng.normal(0, 0.08)), 80, 400))
  pitch = int(np.clip(spk["pitch"] + rng.normal(0, 4), 0, 99))
  raw = espeak.synthesize(word, spk["voice"], spk["variant"], rate=rate, pitch=pitch,
                          pitch_range=spk["pitch_range"], seed=int(rng.integers(2**31)))
  x = audio.resample(raw.astype(np.float32) / 32768.0, espeak.sample_rate(), _SR)
  return _trim(x)


def _utterance(word: str, spk: Dict, ir: np.ndarray, noise_bed: np.ndarray,
               rng: np.random.Generator, snr_db: Tuple[float, float]) -> np.ndarray:
  x = _tilt(_speak(word, spk, rng), spk["tilt"])
  x = _convolve(x, ir)[:len(x) + len(ir) // 4]
  x = x[:_CLIP]
  rms = np.sqrt(np.mean(x ** 2)) + 1e-9
  gain_db = spk["level_db"] + rng.uniform(-6, 6)
  x = x * (_SPEECH_RMS * 10 ** (gain_db / 20) / rms)
  clip = np.zeros(_CLIP, np.float32)
  offset = int(rng.integers(_CLIP - len(x) + 1))
  clip[offset:offset + len(x)] = x
  snr = rng.uniform(*snr_db) + spk["snr_offset_db"]
  speech_rms = np.sqrt(np.mean(x ** 2))
  start = int(rng.integers(len(noise_bed) - _CLIP))
  clip += noise_bed[start:start + _CLIP] * (speech_rms * 10 ** (-snr / 20))
  peak = float(np.max(np.abs(clip)))
  return clip * (0.99 / peak) if peak > 0.99 else clip  # never clip the 16-bit range


def _utterance_plan(spk: Dict, seed: int, per_word: int, unknown_per_speaker: int
                    ) -> List[Tuple[str, int]]:
  """(word, repetition) pairs a speaker records.

  Like Speech Commands' volunteers, a speaker says each keyword a varying number of times,
  uniform on 0..2*per_word (mean per_word), so speakers differ in label mix as well as in voice;
  plus `unknown_per_speaker` distinct other words once each.
  """
  rng = np.random.default_rng([seed, spk["index"], 0x0bad])
  reps = rng.integers(0, 2 * per_word + 1, size=len(sc.KEYWORDS))
  if reps.sum() == 0:
    reps[int(rng.integers(len(sc.KEYWORDS)))] = 1
  others = rng.choice(len(sc.OTHER_WORDS), size=min(unknown_per_speaker, len(sc.OTHER_WORDS)),
                      replace=False)
  plan = [(w, n) for w, r in zip(sc.KEYWORDS, reps) for n in range(int(r))]
  return plan + [(sc.OTHER_WORDS[int(k)], 0) for k in sorted(others)]


def _shard(task) -> List[str]:
  """Runs in a fresh process: writes every utterance of a few speakers; returns their paths."""
  out_dir, speakers, seed, per_word, unknown_per_speaker, snr_db = task
  written = []
  for spk in speakers:
    ir = _room_ir(spk)
    bed = _coloured_noise(np.random.default_rng([seed, spk["index"], 0xbed]), spk["noise"], 8 * _SR)
    for word, n in _utterance_plan(spk, seed, per_word, unknown_per_speaker):
      w = sc.OTHER_WORDS.index(word) + 100 if word in sc.OTHER_WORDS else sc.KEYWORDS.index(word)
      rng = np.random.default_rng([seed, spk["index"], w, n])
      rel = f"{word}/{spk['id']}_nohash_{n}.wav"
      audio.write_wav(os.path.join(out_dir, rel), _utterance(word, spk, ir, bed, rng, snr_db))
      written.append(rel)
  return written


def _background(task) -> List[str]:
  """Runs in a fresh process: the _background_noise_ files (babble uses eSpeak)."""
  out_dir, seed = task
  n = _BACKGROUND_SECONDS * _SR
  written = []
  for colour in _NOISE_COLOURS:
    rng = np.random.default_rng([seed, 0xb9, _NOISE_COLOURS.index(colour)])
    if colour == "babble":
      x = np.zeros(n, np.float32)
      crowd = make_speakers(24, seed + 7919)
      words = sc.KEYWORDS + sc.OTHER_WORDS
      for _ in range(12 * _BACKGROUND_SECONDS):
        y = _speak(words[int(rng.integers(len(words)))], crowd[int(rng.integers(len(crowd)))], rng)
        y = y[:n] / (np.sqrt(np.mean(y ** 2)) + 1e-9)
        at = int(rng.integers(n - len(y) + 1))
        x[at:at + len(y)] += y
      x /= np.sqrt(np.mean(x ** 2)) + 1e-9
    else:
      x = _coloured_noise(rng, colour, n)
    rel = f"{sc.BACKGROUND_DIR}/{colour}_noise.wav"
    audio.write_wav(os.path.join(out_dir, rel), 0.1 * x)
    written.append(rel)
  return written


# ---- the corpus ----------------------------------------------------------------------------------

def _arguments(num_speakers, per_word, unknown_per_speaker, seed, snr_db, val_fraction,
               test_fraction) -> Dict:
  return dict(format=_FORMAT_VERSION, shard_size=_SHARD_SIZE, num_speakers=int(num_speakers),
              per_word=int(per_word), unknown_per_speaker=int(unknown_per_speaker),
              seed=int(seed), snr_db=[float(snr_db[0]), float(snr_db[1])],
              val_fraction=float(val_fraction), test_fraction=float(test_fraction))


def synthesize_corpus(out_dir, num_speakers: int = 128, per_word: int = 2,
                      unknown_per_speaker: int = 8, seed: int = 0,
                      snr_db: Tuple[float, float] = (10.0, 30.0), val_fraction: float = 0.1,
                      test_fraction: float = 0.1, workers: Optional[int] = None,
                      overwrite: bool = False, progress: Optional[bool] = None) -> pathlib.Path:
  """Writes (or reuses) a Speech Commands-layout corpus in `out_dir`; returns its path.

  About num_speakers x (10 keywords x per_word + unknown_per_speaker other words) one-second
  clips (per speaker, each keyword 0..2*per_word times),
  six 30 s background-noise files, and validation/testing lists that split by speaker.
  A folder already holding a corpus made with the same arguments is reused as is; one made with
  other arguments raises unless overwrite=True; a non-empty folder that is not a corpus raises.
  """
  if num_speakers < 1 or per_word < 1 or unknown_per_speaker < 0:
    raise ValueError(f"need num_speakers >= 1, per_word >= 1, unknown_per_speaker >= 0; got "
                     f"{num_speakers}, {per_word}, {unknown_per_speaker}")
  if not (snr_db[0] <= snr_db[1]):
    raise ValueError(f"snr_db must be (low, high) with low <= high, got {snr_db}")
  if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
    raise ValueError(f"bad split fractions: validation {val_fraction}, test {test_fraction}")
  out = pathlib.Path(out_dir).absolute()
  args = _arguments(num_speakers, per_word, unknown_per_speaker, seed, snr_db, val_fraction,
                    test_fraction)
  manifest = out / MANIFEST
  if manifest.is_file():
    old = json.loads(manifest.read_text())
    if old.get("arguments") == args and _count_wavs(out) == old.get("num_utterances"):
      log.info("reusing the synthetic corpus in %s", out)
      return out
    if not overwrite:
      raise FileExistsError(f"{out} holds a synthetic corpus made with other arguments "
                            f"({old.get('arguments')}); pass overwrite=True or another folder")
  elif out.exists() and any(out.iterdir()) and not overwrite:
    raise FileExistsError(f"{out} exists and is not an empty folder or a synthetic corpus")

  t0 = time.time()
  tmp = out.with_name(out.name + f".tmp{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  for d in sc.KEYWORDS + sc.OTHER_WORDS + (sc.BACKGROUND_DIR,):
    (tmp / d).mkdir(parents=True)
  speakers = make_speakers(num_speakers, seed)
  expected_files = sum(len(_utterance_plan(s, seed, per_word, unknown_per_speaker))
                       for s in speakers)
  shards = [speakers[i:i + _SHARD_SIZE] for i in range(0, num_speakers, _SHARD_SIZE)]
  tasks = [(str(tmp), s, seed, per_word, unknown_per_speaker, tuple(snr_db)) for s in shards]
  workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))

  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  written = []
  jobs = [("background", (str(tmp), seed))] + [("shard", t) for t in tasks]
  with tqdm(total=expected_files, desc="synthesising", unit="clip",
            disable=None if progress is None else not progress) as bar:
    for kind, files in _run_in_fresh_processes(jobs, workers):
      written += files
      if kind == "shard":
        bar.update(len(files))

  split_of = assign_splits([s["id"] for s in speakers], val_fraction, test_fraction)
  rows = sorted(r for r in written if not r.startswith(sc.BACKGROUND_DIR))
  for name, split in (("validation_list.txt", "validation"), ("testing_list.txt", "test")):
    lines = [r for r in rows if split_of[sc.speaker_of(r)] == split]
    (tmp / name).write_text("".join(f"{r}\n" for r in lines))
  counts = {s: sum(1 for v in split_of.values() if v == s) for s in sc.SPLITS}
  (tmp / MANIFEST).write_text(json.dumps(dict(
      arguments=args,
      arguments_sha1=hashlib.sha1(json.dumps(args, sort_keys=True).encode()).hexdigest(),
      num_utterances=len(rows), speakers_per_split=counts,
      speakers=speakers, seconds=round(time.time() - t0, 2)), indent=1))
  if out.exists():
    shutil.rmtree(out)
  os.replace(tmp, out)
  log.info("wrote %d clips from %d speakers to %s in %.1f s", len(rows), num_speakers, out,
           time.time() - t0)
  return out


def _run_in_fresh_processes(jobs, workers: int, module: str = "fedexit_jax.data.synth"):
  """Runs each job in its own `python -m <module> <kind> <task json>` process, `workers` at a
  time (the module's __main__ runs the job and prints its result as JSON).

  Fresh processes (not a fork of this one, not a reused pool worker) give every shard the same
  eSpeak starting state; a plain subprocess also spares callers the `if __name__ ==
  '__main__'` guard that multiprocessing's spawn needs. Yields (kind, written files) in
  completion order.
  """
  env = dict(os.environ)
  pkg_root = str(pathlib.Path(__file__).resolve().parents[2])
  env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
  pending, running = list(jobs), []
  try:
    while pending or running:
      while pending and len(running) < workers:
        kind, task = pending.pop(0)
        proc = subprocess.Popen(
            [sys.executable, "-m", module, kind, json.dumps(task)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            text=True)
        running.append((kind, proc))
      kind, proc = running.pop(0)
      out, err = proc.communicate()
      if proc.returncode != 0:
        raise RuntimeError(f"synthesis worker ({kind}) failed with exit code {proc.returncode}:\n"
                           f"{err[-3000:]}")
      yield kind, json.loads(out)
  finally:
    for _, proc in running:
      proc.kill()


def _count_wavs(root: pathlib.Path) -> int:
  return sum(1 for d in root.iterdir() if d.is_dir() and not d.name.startswith(("_", "."))
             for f in d.iterdir() if f.suffix == ".wav")


# ---- CLI hooks (`fedexit data synth`) ------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--out", required=True, help="folder to write (Speech Commands layout)")
  parser.add_argument("--speakers", type=int, default=128, help="number of synthetic speakers")
  parser.add_argument("--per-word", type=int, default=2,
                      help="mean utterances of each keyword per speaker (0..2K)")
  parser.add_argument("--unknown-per-speaker", type=int, default=8,
                      help="distinct non-keyword words per speaker (the _unknown_ class)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--snr-db", type=float, nargs=2, default=(10.0, 30.0),
                      metavar=("LOW", "HIGH"), help="per-utterance SNR range of added noise")
  parser.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace a corpus made with other arguments")


def main(args: argparse.Namespace) -> int:
  t0 = time.time()
  root = synthesize_corpus(args.out, num_speakers=args.speakers, per_word=args.per_word,
                           unknown_per_speaker=args.unknown_per_speaker, seed=args.seed,
                           snr_db=tuple(args.snr_db), workers=args.workers,
                           overwrite=args.overwrite)
  info = json.loads((root / MANIFEST).read_text())
  print(f"{root}: {info['num_utterances']} clips, speakers per split "
        f"{info['speakers_per_split']} ({time.time() - t0:.1f} s)")
  return 0


def _worker_entry(kind: str, task_json: str) -> None:
  task = json.loads(task_json)
  files = _background(tuple(task)) if kind == "background" else _shard(tuple(task))
  sys.stdout.write(json.dumps(files))


if __name__ == "__main__":
  _worker_entry(sys.argv[1], sys.argv[2])
