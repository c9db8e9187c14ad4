"""Speech data: audio loading, Speech Commands (folder and tfds), a synthetic corpus, partitions.

Data flows one way: a folder in the Speech Commands v0.02 layout (real, or written by `synth`)
-> `speech_commands.load_folder` (numpy arrays, cached) -> `partition` (client index lists)
-> `partition.client_datasets` (padded arrays the vectorised simulator consumes).
Nothing here imports jax or anything from `federated/`.

Public API (import the submodules; they are small):

```python
from fedexit_jax.data import audio, speech_commands, synth, partition, tfds_builder

# audio.py ------------------------------------------------------------------------------------
audio.SAMPLE_RATE = 16000
audio.AudioError(ValueError)                       # names the file and the reason
x = audio.load(path, sr=16000, expected_sr=None)   # float32 mono [n]; resampled to `sr`
#   expected_sr=16000 rejects (AudioError) a file stored at another rate instead of resampling.
x = audio.normalize(x, length=None)                # (x - mean) / sqrt(var + 1e-7) over x[:length]
y, mask = audio.crop_or_pad(x, num_samples, offset=0)  # float32 [S], bool [S] (True = real audio)
y, mask = audio.load_clip(path, num_samples=16000)  # load -> crop/pad -> normalise valid part
audio.write_wav(path, x, sr=16000)                 # 16-bit PCM

# speech_commands.py ---------------------------------------------------------------------------
speech_commands.KEYWORDS          # ('yes','no','up','down','left','right','on','off','stop','go')
speech_commands.LABELS_12         # KEYWORDS + ('_silence_', '_unknown_')
speech_commands.LABELS_35         # the 35 words, sorted
data = speech_commands.load_folder(root, label_set="12", cache_dir=None, skip_errors=False,
                                   silence_fraction=0.1, seed=0)
#   -> KeywordData(waveforms float32 [N, 16000] (normalised, zero-padded),
#                  lengths int32 [N], labels int32 [N], speakers str [N] ('' for _silence_ clips),
#                  splits str [N] in {'train','validation','test'}, files str [N],
#                  class_names tuple[str, ...], num_skipped int)
train = speech_commands.select(data, "train")      # same NamedTuple, rows of one split

# synth.py (eSpeak NG; offline) -----------------------------------------------------------------
root = synth.synthesize_corpus(out_dir, num_speakers=128, per_word=2, unknown_per_speaker=8,
                               seed=0, snr_db=(10.0, 30.0), workers=None)   # -> pathlib.Path
#   Writes the Speech Commands layout; a second call with the same arguments reuses the folder.
synth.add_arguments(parser); synth.main(args) -> int    # `fedexit data synth --out DIR ...`

# partition.py --------------------------------------------------------------------------------
parts = partition.by_speaker(speakers, num_clients=None, seed=0)      # list[np.ndarray] of indices
parts = partition.dirichlet(labels, num_clients, alpha, seed=0, min_examples=1)
parts = partition.iid(num_examples, num_clients, seed=0)
cd = partition.client_datasets(waveforms, labels, parts, max_examples=None, seed=0,
                               lengths=None, client_ids=None)
#   -> ClientDatasets(waveforms float32 [K, N_max, S], labels int32 [K, N_max],
#                     example_mask bool [K, N_max], num_examples int32 [K],
#                     client_ids tuple[str, ...], lengths int32 [K, N_max])
partition.summary(cd, num_classes) -> dict          # clients, examples min/mean/max, labels/client
partition.label_entropy(parts, labels, num_classes) -> float   # mean per-client label entropy

# tfds_builder.py (tensorflow-datasets without TensorFlow) ------------------------------------
tfds_builder.prepare(root, data_dir, label_set="12") -> builder   # ARRAY_RECORD on disk
data = tfds_builder.load(data_dir, label_set="12")  # KeywordData via tfds.data_source (no TF)
tfds_builder.load_catalog_speech_commands(...)      # catalog builder; needs TensorFlow ([tf] extra)
```

The synthetic corpus is synthetic: formant-synthesised words from eSpeak NG with per-speaker
voice, variant, pitch, rate, room and noise colouring. It exercises the whole pipeline and gives
non-IID speaker partitions; accuracies on it are not comparable to Speech Commands numbers.
"""
