"""Audio pipeline: generated tones through load/resample/normalise/crop-pad, and bad files."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from fedexit_jax.data import audio


def _tone(freq, sr, seconds, amp=0.5):
  t = np.arange(int(round(sr * seconds))) / sr
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x, sr):
  spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
  return np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)]


def test_stereo_44k1_tone_becomes_mono_16k_with_same_pitch(tmp_path):
  left = _tone(440.0, 44100, 0.75)
  right = _tone(440.0, 44100, 0.75, amp=0.25)
  path = tmp_path / "tone.wav"
  sf.write(path, np.stack([left, right], 1), 44100, subtype="FLOAT")
  x = audio.load(path)
  assert x.dtype == np.float32 and x.ndim == 1
  assert len(x) == 12000  # 0.75 s at 16 kHz
  assert abs(_peak_hz(x, 16000) - 440.0) < 16000 / 12000 + 0.5  # within one FFT bin
  # mono = mean of the channels: amplitude (0.5 + 0.25) / 2, away from the resampler's edges
  assert np.max(np.abs(x[2000:-2000])) == pytest.approx(0.375, abs=0.01)


def test_16k_int16_wav_round_trips_exactly(tmp_path):
  x = _tone(1000.0, 16000, 0.5)
  path = tmp_path / "a.wav"
  audio.write_wav(path, x)
  info = sf.info(path)
  assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
  y = audio.load(path, expected_sr=16000)
  np.testing.assert_allclose(y, x, atol=1.0 / 32767)


def test_normalize_is_zero_mean_unit_variance_over_the_real_part():
  x = np.array([1.0, 2.0, 3.0, 4.0, 9.0, 9.0], np.float32)
  y = audio.normalize(x, length=4)
  # mean 2.5, var 1.25 -> (x - 2.5) / sqrt(1.25 + 1e-7); padding stays 0
  np.testing.assert_allclose(y[:4], (x[:4] - 2.5) / np.sqrt(1.25 + 1e-7), rtol=1e-6)
  assert y[4:].tolist() == [0.0, 0.0]


def test_crop_or_pad_lengths_and_mask():
  x = np.arange(1, 6, dtype=np.float32)
  y, m = audio.crop_or_pad(x, 8)
  assert y.tolist() == [1, 2, 3, 4, 5, 0, 0, 0] and m.tolist() == [True] * 5 + [False] * 3
  y, m = audio.crop_or_pad(x, 3, offset=1)
  assert y.tolist() == [2, 3, 4] and m.all()
  with pytest.raises(ValueError, match="num_samples"):
    audio.crop_or_pad(x, 0)


def test_load_clip_pads_a_short_file_and_normalises_only_real_samples(tmp_path):
  path = tmp_path / "short.wav"
  audio.write_wav(path, _tone(300.0, 16000, 0.25) + 0.1)
  y, mask = audio.load_clip(path, num_samples=16000)
  assert y.shape == (16000,) and mask.sum() == 4000
  assert abs(y[:4000].mean()) < 1e-4 and y[:4000].std() == pytest.approx(1.0, abs=1e-3)
  assert not y[4000:].any()


@pytest.mark.parametrize("kind,reason", [
    ("missing", "does not exist"),
    ("empty", "empty"),
    ("corrupt", "cannot decode"),
    ("directory", "directory"),
])
def test_bad_files_raise_audio_error_naming_file_and_reason(tmp_path, kind, reason):
  path = tmp_path / f"{kind}.wav"
  if kind == "empty":
    path.write_bytes(b"")
  elif kind == "corrupt":
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" + bytes(range(200)))
  elif kind == "directory":
    path.mkdir()
  with pytest.raises(audio.AudioError, match=reason) as err:
    audio.load(path)
  assert str(path) in str(err.value)
  assert isinstance(err.value, ValueError)


def test_wrong_sample_rate_is_rejected_when_a_rate_is_demanded(tmp_path):
  path = tmp_path / "8k.wav"
  audio.write_wav(path, _tone(200.0, 8000, 0.5), sr=8000)
  with pytest.raises(audio.AudioError, match="8000 Hz, expected 16000 Hz"):
    audio.load(path, expected_sr=16000)
  assert len(audio.load(path)) == 8000  # resampled when allowed: 0.5 s at 16 kHz


def test_truncated_wav_is_an_error_not_a_short_clip(tmp_path):
  path = tmp_path / "cut.wav"
  audio.write_wav(path, np.full(16000, 0.1, np.float32))
  assert len(audio.load(path)) == 16000
  with open(path, "r+b") as f:  # 44-byte header + 1000 of the 16000 16-bit samples
    f.truncate(44 + 2000)
  with pytest.raises(audio.AudioError, match="truncated: its header declares 16000 samples, the "
                                             "file holds 1000"):
    audio.load(path)
