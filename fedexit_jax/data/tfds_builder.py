"""Speech Commands through tensorflow-datasets, with and without TensorFlow.

Without TensorFlow (the default): `prepare` writes a folder in the Speech Commands layout (real
or synthetic) into our own tfds dataset, `speech_commands_folder`, as ARRAY_RECORD files, and
`data_sources`/`load` read it back with random access through `tfds.data_source`. Only
`Tensor`, `ClassLabel` and `Text` features are used: those encode and decode in numpy, whereas
`tfds.features.Audio` and the catalog's `speech_commands` builder import TensorFlow.

With TensorFlow and network (`pip install fedexit_jax[tf]`): `load_catalog_speech_commands`
uses the catalog builder, which downloads Speech Commands v0.02 itself. It has only the 12-class
labels and no speaker ids (so no by-speaker partition); prefer the folder path for the paper's
protocol.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

import numpy as np
from etils import epath
import tensorflow_datasets as tfds

from fedexit_jax.data import audio
from fedexit_jax.data import speech_commands as sc

_NUM_SAMPLES = audio.SAMPLE_RATE


class SpeechCommandsFolder(tfds.core.GeneratorBasedBuilder):
  """A local Speech Commands v0.02-layout folder (real or `synth`), normalised 1 s clips."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Normalised float32 clips, speaker and file per example."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="labels12", description="10 keywords, _silence_, _unknown_"),
      tfds.core.BuilderConfig(name="labels35", description="the 35 words"),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Pass the folder (Speech Commands v0.02 extracted, or `fedexit data synth --out DIR`) as "
      "download_config=tfds.download.DownloadConfig(manual_dir=FOLDER); "
      "fedexit_jax.data.tfds_builder.prepare(FOLDER, DATA_DIR) does this.")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # tfds' default resolves the package through `importlib_resources`, a backport that is not
    # a dependency of tfds on Python >= 3.9; this file's own path is what it would find.
    return epath.Path(__file__)

  def _label_set(self) -> str:
    return self.builder_config.name[len("labels"):]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=("Speech Commands-layout keyword clips, 16 kHz, 1 s, normalised to zero mean "
                     "and unit variance over the real samples and zero-padded."),
        features=tfds.features.FeaturesDict({
            "audio": tfds.features.Tensor(shape=(_NUM_SAMPLES,), dtype=np.float32),
            "length": tfds.features.Tensor(shape=(), dtype=np.int32),
            "label": tfds.features.ClassLabel(names=list(sc.class_names(self._label_set()))),
            "speaker": tfds.features.Text(),
            "file": tfds.features.Text(),
        }),
        supervised_keys=("audio", "label"),
        homepage="https://arxiv.org/abs/1804.03209",
    )

  def _split_generators(self, dl_manager):
    root = dl_manager.manual_dir
    data = sc.load_folder(os.fspath(root), label_set=self._label_set(), use_cache=False)
    return {split: self._generate_examples(sc.select(data, split)) for split in sc.SPLITS
            if np.any(data.splits == split)}

  def _generate_examples(self, data: sc.KeywordData):
    for i in range(data.labels.shape[0]):
      yield str(data.files[i]), {
          "audio": data.waveforms[i], "length": int(data.lengths[i]),
          "label": int(data.labels[i]), "speaker": str(data.speakers[i]),
          "file": str(data.files[i])}


def _builder(data_dir, label_set: str) -> SpeechCommandsFolder:
  sc.class_names(label_set)  # validates
  return SpeechCommandsFolder(data_dir=os.fspath(data_dir), config=f"labels{label_set}",
                              file_format="array_record")


def prepare(root, data_dir, label_set: str = "12") -> SpeechCommandsFolder:
  """Builds the ARRAY_RECORD dataset from folder `root` under `data_dir` (reused if present:
  tfds semantics, so use one data_dir per source folder)."""
  if not os.path.isdir(os.fspath(root)):
    raise FileNotFoundError(f"Speech Commands folder {root} does not exist")
  builder = _builder(data_dir, label_set)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(root)))
  return builder


def data_sources(data_dir, label_set: str = "12") -> Dict[str, object]:
  """{split: random-access source}; source[i] is a dict of numpy values (no TensorFlow)."""
  builder = _builder(data_dir, label_set)
  if not builder.is_prepared():
    raise FileNotFoundError(f"no prepared speech_commands_folder/labels{label_set} under "
                            f"{data_dir}; run tfds_builder.prepare(folder, data_dir) first")
  return tfds.data_source(f"{builder.name}/labels{label_set}", data_dir=os.fspath(data_dir))


def load(data_dir, label_set: str = "12") -> sc.KeywordData:
  """The prepared dataset as one KeywordData (all splits), read through tfds.data_source."""
  sources = data_sources(data_dir, label_set)
  cols = {k: [] for k in ("waveforms", "lengths", "labels", "speakers", "splits", "files")}
  for split in sc.SPLITS:
    if split not in sources:
      continue
    src = sources[split]
    for i in range(len(src)):
      ex = src[i]
      cols["waveforms"].append(ex["audio"])
      cols["lengths"].append(ex["length"])
      cols["labels"].append(ex["label"])
      cols["speakers"].append(_text(ex["speaker"]))
      cols["files"].append(_text(ex["file"]))
      cols["splits"].append(split)
  return sc.KeywordData(
      waveforms=np.stack(cols["waveforms"]).astype(np.float32),
      lengths=np.asarray(cols["lengths"], np.int32), labels=np.asarray(cols["labels"], np.int32),
      speakers=np.asarray(cols["speakers"], dtype=str),
      splits=np.asarray(cols["splits"], dtype=str),
      files=np.asarray(cols["files"], dtype=str), class_names=sc.class_names(label_set),
      num_skipped=0)


def _text(v) -> str:
  return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def load_catalog_speech_commands(data_dir: Optional[str] = None,
                                 num_samples: int = _NUM_SAMPLES) -> sc.KeywordData:
  """The catalog's `speech_commands` (v0.02, 12 classes), downloaded by tfds; needs TensorFlow.

  Speakers are '' (the catalog keeps no speaker ids), so partition with `dirichlet`/`iid`.
  """
  try:
    import tensorflow  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError as e:
    raise ImportError(
        "tfds' catalog speech_commands builder decodes audio with TensorFlow, which is not "
        "installed: pip install 'fedexit_jax[tf]' (tensorflow-cpu and pydub), or download and "
        "extract Speech Commands yourself and use speech_commands.load_folder / "
        "tfds_builder.prepare") from e
  builder = tfds.builder("speech_commands", data_dir=data_dir)
  builder.download_and_prepare()
  catalog_names = builder.info.features["label"].names
  remap = np.asarray([sc.LABELS_12.index(n) for n in catalog_names], np.int32)
  cols = {k: [] for k in ("waveforms", "lengths", "labels", "splits")}
  for split, name in (("train", "train"), ("validation", "validation"), ("test", "test")):
    for ex in tfds.as_numpy(builder.as_dataset(split=name)):
      x, mask = audio.crop_or_pad(ex["audio"].astype(np.float32) / 32768.0, num_samples)
      cols["waveforms"].append(audio.normalize(x, int(mask.sum())))
      cols["lengths"].append(int(mask.sum()))
      cols["labels"].append(int(remap[ex["label"]]))
      cols["splits"].append(split)
  n = len(cols["labels"])
  return sc.KeywordData(
      waveforms=np.stack(cols["waveforms"]), lengths=np.asarray(cols["lengths"], np.int32),
      labels=np.asarray(cols["labels"], np.int32), speakers=np.full(n, "", dtype=str),
      splits=np.asarray(cols["splits"], dtype=str), files=np.full(n, "", dtype=str),
      class_names=sc.LABELS_12, num_skipped=0)
