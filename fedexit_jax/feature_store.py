"""The frozen conv encoder's features of a corpus, kept on disk for the next run.

Running the CNN over every utterance is most of a run's start-up once the corpus is made (ASR
with 300 readers: 105 of 141 s on a 2-core CPU), and the features depend only on what the key
names: the audio, the CNN's weights and config, the masking, the source of the code that runs
the CNN, the JAX version and platform. So a changed corpus, checkpoint or implementation never
reuses stale features, and a run that loads them gets what it would have computed (bit for bit
on the machine that wrote them). A file that cannot be read is recomputed and rewritten; an
unwritable folder costs only the saving. The folder is trimmed, least recently used first,
beyond MAX_BYTES.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

ENV = "FEDEXIT_FEATURE_CACHE"
MAX_BYTES = 8 << 30
SUFFIX = ".npz"


def resolve(value) -> Path | None:
  """The folder for the config value `feature_cache`, None where it is off. None: off. 'auto':
  $FEDEXIT_FEATURE_CACHE where set (a folder, or off/none/0/false), else
  <config_utils.cache_root()>/features. Any other string: that folder."""
  from fedexit_jax import config_utils  # pylint: disable=import-outside-toplevel
  return config_utils.resolve_cache_folder(value, ENV, "features", "feature_cache")


def source_digest(*modules) -> str:
  """A hash of the modules' source files: code that computes the features is part of the key,
  so a changed CNN implementation (an upgrade, a fix) never loads the old one's features."""
  h = hashlib.sha256()
  for m in modules:
    h.update(Path(m.__file__).read_bytes())
  return h.hexdigest()


def path_for(folder: Path, key: str) -> Path:
  return folder / (hashlib.sha256(key.encode()).hexdigest()[:24] + SUFFIX)


def load_or_make(folder: Path | None, key: str, make: Callable[[], tuple[np.ndarray, ...]],
                 check: Callable[[tuple[np.ndarray, ...]], str | None] = lambda _: None
                 ) -> tuple[np.ndarray, ...]:
  """The arrays stored under `key` in `folder`, else make() (then stored). `check` returns why
  loaded arrays cannot be these (e.g. a shape that does not match the corpus), or None."""
  if folder is None:
    return make()
  path = path_for(folder, key)
  if path.exists():
    try:
      with np.load(path, allow_pickle=False) as z:
        arrays = tuple(z[f"a{i}"] for i in range(len(z.files)))
      why = check(arrays)
      if why is None:
        os.utime(path)  # recently used: trimmed last
        log.info("conv features loaded from %s", path)
        return arrays
    except Exception as e:  # pylint: disable=broad-except  # zip, CRC, header: all mean unusable
      why = f"{type(e).__name__}: {e}"
    log.warning("feature cache %s is unusable (%s): computing the features again", path, why)
  arrays = make()
  _save(folder, path, arrays)
  return arrays


def _save(folder: Path, path: Path, arrays: tuple[np.ndarray, ...]) -> None:
  size = sum(np.asarray(a).nbytes for a in arrays)
  if size > MAX_BYTES:  # e.g. all of LibriSpeech's 100 h: it would only push out the rest
    log.warning("conv features not kept in %s: %.1f GiB is over its %.1f GiB", folder,
                size / 2**30, MAX_BYTES / 2**30)
    return
  tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
  try:
    folder.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
      np.savez(f, **{f"a{i}": np.asarray(a) for i, a in enumerate(arrays)})
    os.replace(tmp, path)  # whole or absent: a reader never sees half a file
  except OSError as e:
    log.warning("conv features not kept in %s (%s)", folder, e)
    try:
      tmp.unlink(missing_ok=True)
    except OSError:
      pass  # no folder, so no file
    return
  trim(folder, keep=path)


def trim(folder: Path, keep: Path | None = None, max_bytes: int | None = None) -> list[Path]:
  """Deletes the least recently used feature files until the folder holds at most max_bytes
  (default MAX_BYTES); never `keep`. Returns what it deleted."""
  limit = MAX_BYTES if max_bytes is None else max_bytes
  files = []
  for p in folder.glob("*" + SUFFIX):
    try:
      st = p.stat()
    except OSError:
      continue  # deleted by another run meanwhile
    files.append((st.st_mtime, st.st_size, p))
  total = sum(size for _, size, _ in files)
  gone = []
  for _, size, p in sorted(files, key=lambda f: f[0]):
    if total <= limit:
      break
    if p == keep:
      continue
    p.unlink(missing_ok=True)
    total -= size
    gone.append(p)
  return gone
