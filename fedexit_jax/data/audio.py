"""Audio loading for wav2vec2/HuBERT: mono, 16 kHz, fixed length, zero-mean unit-variance.

The normalisation matches transformers' Wav2Vec2FeatureExtractor (do_normalize=True): statistics
over the real samples only, padding left at 0. Base models (group-norm feature encoder) are meant
to see zero-padded input without an attention mask, so zero padding after normalising is the
right input for them; the mask is returned for the models that do take one.
"""
from __future__ import annotations

import io
import os
import warnings
from typing import Optional, Tuple

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm


class AudioError(ValueError):
  """A file that cannot be used as audio; the message names the file and the reason."""

  def __init__(self, path, reason: str):
    self.path = str(path)
    self.reason = reason
    super().__init__(f"{self.path}: {reason}")


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
  """Band-limited resampling (soxr, high quality) of a float32 signal."""
  if orig_sr == target_sr:
    return np.asarray(x, np.float32)
  import soxr  # pylint: disable=import-outside-toplevel
  y = soxr.resample(np.asarray(x, np.float32), orig_sr, target_sr, quality="HQ")
  return y.astype(np.float32)


def _wav_declared_frames(path: str) -> Optional[int]:
  """Frames the `data` chunk of a RIFF/WAVE file's header declares (None: not a plain PCM WAV).
  libsndfile reads a truncated file's remaining frames without a word; this is how to tell."""
  with open(path, "rb") as f:
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
      return None
    block_align = None
    while True:
      chunk = f.read(8)
      if len(chunk) < 8:
        return None
      size = int.from_bytes(chunk[4:], "little")
      if chunk[:4] == b"fmt ":
        fmt = f.read(size)
        block_align = int.from_bytes(fmt[12:14], "little") if len(fmt) >= 14 else None
        if size % 2:
          f.read(1)
      elif chunk[:4] == b"data":  # 0 or 0xFFFFFFFF: a streamed file of unknown length
        return size // block_align if block_align and 0 < size < 0xFFFFFFFF else None
      else:
        f.seek(size + size % 2, os.SEEK_CUR)


def load(path, sr: int = SAMPLE_RATE, expected_sr: Optional[int] = None) -> np.ndarray:
  """Reads any file soundfile/librosa can decode as float32 mono at `sr`.

  expected_sr: when set, a file stored at another rate raises AudioError instead of being
  resampled (for callers that must not silently change the data, e.g. a dataset defined at 16 kHz).
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise AudioError(path, "file does not exist")
  if os.path.isdir(path):
    raise AudioError(path, "is a directory, not an audio file")
  if os.path.getsize(path) == 0:
    raise AudioError(path, "file is empty (0 bytes)")
  try:
    data, file_sr = sf.read(path, dtype="float32", always_2d=True)
  except Exception as e_sf:  # pylint: disable=broad-except
    # soundfile covers WAV/FLAC/OGG/MP3 (libsndfile >= 1.1); librosa/audioread the rest.
    try:
      import librosa  # pylint: disable=import-outside-toplevel
      with warnings.catch_warnings():  # its "PySoundFile failed" / audioread deprecation notes
        warnings.simplefilter("ignore")
        mono, file_sr = librosa.load(path, sr=None, mono=True)
      data = mono[:, None]
    except Exception as e_lr:  # pylint: disable=broad-except
      raise AudioError(path, f"cannot decode audio ({type(e_sf).__name__}: {e_sf}; "
                             f"librosa: {type(e_lr).__name__}: {e_lr})") from e_lr
  if data.shape[0] == 0:
    raise AudioError(path, "contains no samples")
  declared = _wav_declared_frames(path)
  if declared is not None and declared > data.shape[0]:
    raise AudioError(path, f"is truncated: its header declares {declared} samples, the file "
                           f"holds {data.shape[0]}")
  if expected_sr is not None and file_sr != expected_sr:
    raise AudioError(path, f"sample rate is {file_sr} Hz, expected {expected_sr} Hz")
  x = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
  if not np.all(np.isfinite(x)):
    raise AudioError(path, "contains NaN or infinite samples")
  return resample(x, int(file_sr), sr)


def normalize(x: np.ndarray, length: Optional[int] = None) -> np.ndarray:
  """(x - mean) / sqrt(var + 1e-7) over x[..., :length]; samples past `length` become 0."""
  x = np.asarray(x, np.float32)
  n = x.shape[-1] if length is None else int(length)
  valid = x[..., :n]
  mean = valid.mean(axis=-1, keepdims=True)
  var = valid.var(axis=-1, keepdims=True)
  out = np.zeros_like(x)
  out[..., :n] = (valid - mean) / np.sqrt(var + _EPS)
  return out


def crop_or_pad(x: np.ndarray, num_samples: int, offset: int = 0) -> Tuple[np.ndarray, np.ndarray]:
  """Window x[offset:offset+num_samples], zero-padded at the end; mask is True on real samples."""
  if num_samples <= 0:
    raise ValueError(f"num_samples must be positive, got {num_samples}")
  if not 0 <= offset <= max(len(x) - 1, 0):
    raise ValueError(f"offset {offset} outside a signal of {len(x)} samples")
  piece = np.asarray(x[offset:offset + num_samples], np.float32)
  out = np.zeros(num_samples, np.float32)
  out[:len(piece)] = piece
  mask = np.zeros(num_samples, bool)
  mask[:len(piece)] = True
  return out, mask


def load_clip(path, num_samples: int = SAMPLE_RATE, sr: int = SAMPLE_RATE,
              expected_sr: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
  """load -> first `num_samples` samples, zero-padded -> normalised over the real samples."""
  x, mask = crop_or_pad(load(path, sr=sr, expected_sr=expected_sr), num_samples)
  return normalize(x, int(mask.sum())), mask


def write_wav(path, x: np.ndarray, sr: int = SAMPLE_RATE) -> None:
  """16-bit PCM WAV, the Speech Commands format. Float input is clipped to [-1, 1]."""
  x = np.asarray(x)
  if x.dtype != np.int16:
    x = np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
  buf = io.BytesIO()  # libsndfile's many small writes to a real file cost ~4 ms per clip
  sf.write(buf, x, sr, subtype="PCM_16", format="WAV")
  with open(os.fspath(path), "wb") as f:
    f.write(buf.getvalue())
