"""eSpeak NG through ctypes, using the library and voice data shipped by `espeakng-loader`.

Why ctypes and not the command line: no system package is needed and a word takes under a
millisecond in-process, against ~15 ms for spawning the CLI.

Determinism: the library keeps synthesis state between utterances (wavegen.c: the pitch-flutter
index `static int Flutter_ix` in AdvanceParameters, and other function-static phase state), which
no API call resets, so an utterance depends on what the process synthesised before it. Same
sequence of calls in a fresh process -> byte-identical samples; `synth` therefore runs each fixed
shard of speakers in a fresh worker process. `espeak_ng_SetRandSeed` is also called per utterance.
"""
from __future__ import annotations

import ctypes
import functools
import os
from typing import List, Tuple

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4

# Native English voices (the mb-* ones need mbrola, which is not shipped).
ENGLISH_VOICES = ("en", "en-029", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                  "en-gb-x-rp", "en-us", "en-us-nyc")
# Variants that still sound like a human talker (robots, "Demonic" etc. left out).
HUMAN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
                  "croak", "klatt", "klatt2", "klatt3", "klatt4", "whisper", "whisperf",
                  "Alex", "Andy", "Annie", "adam", "anika", "aunty", "belinda", "benjamin",
                  "boris", "caleb", "david", "ed", "edward", "grandma", "grandpa", "ian", "john",
                  "linda", "max", "michel", "norbert", "paul", "quincy", "rob", "robert",
                  "shelby", "steph", "travis", "victor", "zac")

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)
_chunks: List[np.ndarray] = []


@_CALLBACK
def _collect(wav, num_samples, events):
  del events
  if wav and num_samples > 0:
    _chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
  return 0  # 0 = continue synthesis


def data_path() -> str:
  import espeakng_loader  # pylint: disable=import-outside-toplevel
  return espeakng_loader.get_data_path()


@functools.lru_cache(maxsize=None)
def _library() -> Tuple[ctypes.CDLL, int]:
  """Loads and initialises the library once per process; returns (lib, sample_rate)."""
  try:
    import espeakng_loader  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise RuntimeError("the synthetic corpus needs eSpeak NG: pip install espeakng-loader") from e
  lib = ctypes.CDLL(espeakng_loader.get_library_path())
  lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
  lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
  lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
  lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
  lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                               ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
  sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path().encode(),
                             _INITIALIZE_DONT_EXIT)
  if sr <= 0:
    raise RuntimeError(f"espeak_Initialize failed (returned {sr}) with data at {data_path()}")
  lib.espeak_SetSynthCallback(_collect)
  return lib, sr


def sample_rate() -> int:
  return _library()[1]


def available_variants() -> Tuple[str, ...]:
  """HUMAN_VARIANTS that exist in the shipped voice data (a missing variant is silently ignored
  by espeak_SetVoiceByName, so check the files)."""
  vdir = os.path.join(data_path(), "voices", "!v")
  return tuple(v for v in HUMAN_VARIANTS if os.path.isfile(os.path.join(vdir, v)))


def synthesize(text: str, voice: str = "en-us", variant: str = "", rate: int = 175,
               pitch: int = 50, pitch_range: int = 50, seed: int = 0) -> np.ndarray:
  """Speaks `text`; int16 samples at `sample_rate()` (22050 Hz).

  rate: words per minute (80-450); pitch, pitch_range: 0-99 (espeak's scale).
  """
  lib, _ = _library()
  name = f"{voice}+{variant}" if variant else voice
  if lib.espeak_SetVoiceByName(name.encode()) != 0:
    raise ValueError(f"eSpeak NG has no voice {name!r}")
  for param, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range), (_VOLUME, 100)):
    if lib.espeak_SetParameter(param, int(value), 0) != 0:
      raise ValueError(f"eSpeak NG rejected parameter {param}={value}")
  lib.espeak_ng_SetRandSeed(int(seed))
  buf = text.encode("utf-8") + b"\0"
  _chunks.clear()
  status = lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
  if status != 0:
    raise RuntimeError(f"espeak_Synth({text!r}, voice {name!r}) failed with status {status}")
  out = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
  _chunks.clear()
  return out
