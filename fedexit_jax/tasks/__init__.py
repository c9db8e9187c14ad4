"""The paper's tasks as small units (base.Task): keyword spotting, speaker id (+ verification),
emotion, ASR. `get(config.task)` gives the one a run uses."""
from __future__ import annotations

from fedexit_jax.tasks.base import Corpus, Task
from fedexit_jax.tasks.kws import KeywordSpotting

TASKS = ("kws", "sid", "er", "asr")


def get(name: str) -> Task:
  """The task named `name` (config key `task`)."""
  if name == "kws":
    return KeywordSpotting()
  if name == "sid":
    from fedexit_jax.tasks.sid import SpeakerId  # pylint: disable=import-outside-toplevel
    return SpeakerId()
  if name == "er":
    from fedexit_jax.tasks.er import Emotion  # pylint: disable=import-outside-toplevel
    return Emotion()
  if name == "asr":
    from fedexit_jax.tasks.asr import SpeechRecognition  # pylint: disable=import-outside-toplevel
    return SpeechRecognition()
  raise ValueError(f"unknown task {name!r}; choose one of {TASKS}")


__all__ = ["TASKS", "Corpus", "Task", "get"]
