"""Speech data: audio loading, Speech Commands (folder and tfds), a synthetic corpus, partitions,
and the other tasks' corpora.

Other tasks (each loader returns utterances.Utterances; the offline stand-ins are written in the
real layouts by synth_tasks, so one loader reads both):
  voxceleb.load_identification(root, max_seconds) / voxceleb.load_verification(root, trials_file)
  iemocap.load(root, test_session=5, max_seconds) / iemocap.folds(data)   (SUPERB 4 classes)
  librispeech.load(root, splits=("train-clean-100",), max_seconds), librispeech.VOCAB,
    text_to_ids, ids_to_text                                               (CTC characters)
  synth_tasks.synthesize_voxceleb / synthesize_iemocap / synthesize_librispeech(out_dir, ...)
  corpus.py: the decode -> cut -> normalise -> pad -> cache step they share

Data flows one way: a folder in the Speech Commands v0.02 layout (real, or written by `synth`)
-> `speech_commands.load_folder` (numpy arrays, cached) -> `partition` (client index lists)
-> `partition.client_datasets` (padded arrays the vectorised simulator consumes).
Nothing here imports jax or anything from `federated/`.

Public API (import the submodules; they are small):

```python
from fedexit_jax.data import audio, speech_commands, synth, partition, tfds_builder

# audio.py ------------------------------------------------------------------------------------
audio.SAMPLE_RATE = 16000
audio.AudioError(ValueError)                       # .path, .reason; message "<path>: <reason>"
x = audio.load(path, sr=16000, expected_sr=None)   # float32 mono [n]; resampled (soxr) to `sr`
#   expected_sr=16000 rejects (AudioError) a file stored at another rate instead of resampling.
x = audio.normalize(x, length=None)   # (x - mean) / sqrt(var + 1e-7) over x[..., :length]
y, mask = audio.crop_or_pad(x, num_samples, offset=0)  # float32 [S], bool [S] (True = real audio)
y, mask = audio.load_clip(path, num_samples=16000)  # load -> crop/pad -> normalise the real part
audio.write_wav(path, x, sr=16000)                 # 16-bit PCM
audio.resample(x, orig_sr, target_sr)

# speech_commands.py ---------------------------------------------------------------------------
speech_commands.KEYWORDS          # ('yes','no','up','down','left','right','on','off','stop','go')
speech_commands.OTHER_WORDS       # the 25 other words of the 35-word set (-> _unknown_ in 12)
speech_commands.LABELS_12         # KEYWORDS + ('_silence_', '_unknown_')
speech_commands.LABELS_35         # the 35 words, sorted
speech_commands.class_names(label_set)            # "12" | "35" -> tuple of names
data = speech_commands.load_folder(root, label_set="12", num_samples=16000, cache_dir=None,
                                   use_cache=True, skip_errors=False, silence_fraction=0.1,
                                   seed=0, resample=True, progress=None)
#   -> KeywordData(waveforms float32 [N, S] (normalised over the real part, zero-padded),
#                  lengths int32 [N], labels int32 [N], speakers str [N] ('' for _silence_),
#                  splits str [N] in {'train','validation','test'}, files str [N],
#                  class_names tuple[str, ...], num_skipped int)
#   Cached as <root>/.fedexit_cache/*.npz (key: arguments + every file's size/mtime).
train = speech_commands.select(data, "train")      # KeywordData of one split
rows = speech_commands.take(data, indices)         # KeywordData of some rows

# synth.py (eSpeak NG; offline) -----------------------------------------------------------------
root = synth.synthesize_corpus(out_dir, num_speakers=128, per_word=2, unknown_per_speaker=8,
                               seed=0, snr_db=(10.0, 30.0), val_fraction=0.1,
                               test_fraction=0.1, workers=None, overwrite=False,
                               progress=None)     # -> pathlib.Path
#   Speech Commands layout; splits by speaker; a second call with the same arguments reuses the
#   folder (synth_manifest.json); other arguments on an existing corpus raise FileExistsError.
synth.add_arguments(parser); synth.main(args) -> int    # `fedexit data synth --out DIR ...`

# partition.py --------------------------------------------------------------------------------
parts = partition.by_speaker(speakers, num_clients=None, seed=0)  # list[np.ndarray] of indices
parts = partition.dirichlet(labels, num_clients, alpha, seed=0, min_examples=1)
parts = partition.iid(num_examples, num_clients, seed=0)
kept, held = partition.holdout_speakers(speakers, fraction, seed=0)  # whole speakers held out
cd = partition.client_datasets(waveforms, labels, parts, max_examples=None, seed=0,
                               lengths=None, client_ids=None, pad_multiple=1)
#   -> ClientDatasets(waveforms float32 [K, N_max, S], labels int32 [K, N_max],
#                     example_mask bool [K, N_max], num_examples int32 [K],
#                     client_ids tuple[str, ...], lengths int32 [K, N_max])
s = partition.summary(cd, num_classes)   # dict: clients, examples, padded_to,
#   examples_per_client {min,mean,max}, labels_per_client {min,mean,max}, label_entropy,
#   label_counts [K, C]
partition.format_summary(s) -> str
partition.label_entropy(parts, labels, num_classes) -> float   # mean per-client, nats

# tfds_builder.py (tensorflow-datasets without TensorFlow) ------------------------------------
tfds_builder.prepare(root, data_dir, label_set="12")      # folder -> ARRAY_RECORD (reused if there)
tfds_builder.data_sources(data_dir, label_set="12")       # {split: tfds.data_source}, random access
data = tfds_builder.load(data_dir, label_set="12")        # KeywordData, TensorFlow never imported
tfds_builder.load_catalog_speech_commands(data_dir=None)  # catalog builder; needs TensorFlow ([tf])
```

Typical use (the paper's protocol: clients by speaker, central test set of unseen speakers):

```python
root = synth.synthesize_corpus("corpus")                  # or a real Speech Commands folder
data = speech_commands.load_folder(root, label_set="12")
train, test = speech_commands.select(data, "train"), speech_commands.select(data, "test")
parts = partition.by_speaker(train.speakers, num_clients=100)
clients = partition.client_datasets(train.waveforms, train.labels, parts, lengths=train.lengths)
```

The synthetic corpus is synthetic: formant-synthesised words from eSpeak NG with per-speaker
voice, variant, pitch, rate, room and noise colouring. It exercises the whole pipeline and gives
non-IID speaker partitions; accuracies on it are not comparable to Speech Commands numbers.
"""
