"""The embedded offline default: `fedexit run --workdir DIR` runs this.

A synthetic spoken-keyword corpus (eSpeak NG speech in the Speech Commands layout, generated once
and cached), the laptop-sized 12-layer backbone self-supervised-pretrained offline (the shipped
`builtin:small_ssl`, HuBERT-style masked prediction on other synthetic speakers, see
fedexit_jax/pretrain.py), about a hundred clients split by speaker into the paper's two device
tiers (half capped at exit 3, half at exit 6). Sized to learn in a few minutes on 2 CPU cores.

Every other config starts from this one (`get_config()` below) and changes values: its keys are
the schema that `fedexit_jax.config_utils.validate_config` checks against, so a typo in a config
file or on the command line is an error, not a silently ignored key.
"""
from __future__ import annotations

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # The experiment seed: moves the client partition, the tiers' assignment of clients, the
  # clients sampled each round, local shuffles and the model/head init together (so two
  # weighting schemes run with one seed see the same clients, tiers, cohorts and init). The
  # corpus and its test speakers are fixed by data.seed.
  c.seed = 0
  # kws (keyword spotting: this file; configs/kws35.py) | sid (speaker id + verification EER,
  # configs/sid.py) | er (emotion, configs/er.py) | asr (CTC speech recognition, configs/asr.py)
  c.task = "kws"
  c.rounds = 40  # federated rounds
  c.eval_every = 5  # evaluate the global model on the central test set every k rounds (and last)
  c.eval_batch_size = 128
  # ASR only: also read each exit with a lexicon-constrained CTC beam search (no language model;
  # fedexit_jax.ctc_lexicon) and report "wer_lexicon" / "cer_lexicon" beside the greedy "wer" /
  # "cer". lexicon: "" (off) | "train" (the words of the clients' transcripts) | a word-list file
  # (the first field of each line, e.g. LibriSpeech's librispeech-lexicon.txt)
  c.decode = ml_collections.ConfigDict()
  c.decode.lexicon = ""
  c.decode.beam_size = 50
  c.decode.word_score = 0.0  # added per word: > 0 favours more (shorter) words, < 0 fewer
  c.checkpoint_every = 10  # rounds between checkpoints (the last round is always saved)
  c.max_checkpoints = 2  # finalized checkpoints kept on disk
  c.progress_bar = True
  # Stop with an error after this many rounds in a row in which every client's update was
  # non-finite (all excluded: the model did not move); lower the learning rates then.
  c.stop_after_excluded_rounds = 3

  c.data = ml_collections.ConfigDict()
  c.data.source = "synth"  # "synth" (offline eSpeak corpus) | "folder" (Speech Commands) | "tfds"
  # Corpus folder. None: the synthetic corpus is generated into (and reused from) a cache folder
  # keyed by its settings; for "folder" the extracted Speech Commands v0.02 folder; for "tfds"
  # the tfds data_dir.
  c.data.dir = None
  # folder: the separate 12-class test archive (e.g. speech_commands_test_set_v0.01, the SUPERB
  # protocol with a v0.01 data.dir) as the central test set instead of testing_list.txt
  c.data.test_dir = None
  c.data.num_classes = 12  # 12 (10 keywords + _silence_ + _unknown_) or 35
  c.data.clip_seconds = 1.0  # crop/pad every utterance to this length at 16 kHz
  c.data.seed = 0  # corpus generation and its train/test speaker split (not the partition)
  # synth: speakers in the generated corpus. 212 with test_fraction 0.44: 119 training speakers
  # and 93 held-out test speakers, about 2,580 test utterances: one seed's binomial standard
  # error at ~17% error is about 0.74 points (more in truth: a speaker's clips are correlated).
  c.data.num_speakers = 212
  c.data.per_word = 2  # synth: utterances per speaker of each of the 10 keywords
  c.data.unknown_per_speaker = 8  # synth: distinct non-keyword words per speaker (_unknown_)
  c.data.snr_db = (10.0, 30.0)  # synth: per-utterance SNR range of the added noise
  # synth: fractions of speakers held out. The test speakers form the central test set (never
  # seen by a client); folder/tfds use the official validation/testing lists instead.
  c.data.val_fraction = 0.0
  c.data.test_fraction = 0.44
  c.data.silence_fraction = 0.1  # _silence_ clips cut from background noise, per other clip
  c.data.max_examples_per_client = None  # cap on a client's examples (None: all)
  # "speaker": speakers dealt to data.num_clients clients, balancing sizes, never splitting a
  # speaker | "per_speaker": one client per speaker (the paper's "by speaker"; data.num_clients
  # is ignored) | "dirichlet" | "iid"
  c.data.partition = "speaker"
  c.data.dirichlet_alpha = 0.5
  c.data.num_clients = 100
  c.data.skip_bad_files = False  # skip unreadable audio files (counted and reported) or fail
  # The other tasks (sid, er, asr; unused by kws). Their utterances differ in length: each is cut
  # to data.max_seconds and padded, padded frames masked.
  c.data.max_seconds = 6.0
  c.data.per_speaker = 20  # synth: utterances per speaker (sid, er, asr)
  c.data.verify_speakers = 20  # sid synth: further speakers, never a client's, for the EER trials
  c.data.num_trials = 4000  # sid synth: verification trials among them (balanced)
  c.data.trials_file = None  # sid folder: VoxCeleb1 trial list (None: veri_test2.txt, veri_test.txt)
  c.data.num_sessions = 5  # er synth: IEMOCAP-like sessions of one female and one male speaker
  c.data.test_session = 5  # er: the held-out session (the central test set)
  c.data.train_splits = ("train-clean-100",)  # asr folder: LibriSpeech split folders to train on
  c.data.test_splits = ("test-clean",)  # asr folder: the central test set (e.g. + "test-other")

  c.model = ml_collections.ConfigDict()
  c.model.preset = "small"  # fedexit_jax.models.config presets: small | base | large
  # EncoderConfig fields replacing the preset's, e.g. --config.model.overrides.hidden_size=64
  c.model.overrides = ml_collections.ConfigDict()
  # None: random init. Else "builtin:small_ssl" (shipped, made by `fedexit pretrain`), a folder
  # from `fedexit convert`/`fedexit pretrain`, a PyTorch/HF checkpoint path, or a Hub id such as
  # "facebook/hubert-base-ls960" already in the local cache. A checkpoint fixes the architecture:
  # model.overrides that contradict it are errors.
  c.model.checkpoint = "builtin:small_ssl"
  c.model.exits = (3, 6, 9, 12)  # 1-based Transformer layers with an exit head
  c.model.freeze_feature_encoder = True  # frozen CNN: its features are computed once and cached
  # Taps of the temporal convolution in the per-frame ("frames", CTC) exit heads; 3 frames =
  # 60 ms of context. Classification heads ignore it.
  c.model.frame_head_kernel = 3
  # Units per direction of a bidirectional GRU after that convolution (SUPERB's ASR head is a
  # BiLSTM); 0: none. Classification heads ignore it.
  c.model.frame_head_rnn = 0

  # Device tiers: fraction of clients, deepest exit they train, relative compute speed (used only
  # by the simulated wall-clock). The paper: half the clients at layer 3, half at the best layer.
  c.tiers = [
      dict(fraction=0.5, max_depth=3, speed=1.0),
      dict(fraction=0.5, max_depth=6, speed=2.0),
  ]
  c.client_depths = None  # optional explicit depth per client (a tuple of num_clients exits)
  c.clients_per_round = 10

  c.local_epochs = 2
  c.local_steps = None  # if set, exactly this many local steps per client instead of epochs
  c.batch_size = 16
  c.client_optimizer = ml_collections.ConfigDict()
  c.client_optimizer.name = "adam"  # sgd | momentum | adam | adamw
  c.client_optimizer.learning_rate = 1e-3
  c.client_optimizer.head_learning_rate = None  # the exit heads' own rate (None: learning_rate)
  c.client_optimizer.momentum = 0.9  # momentum only
  c.client_optimizer.weight_decay = 0.0  # adamw only
  # The rate over rounds: constant | warmup_cosine (linear warm-up over warmup_rounds to
  # learning_rate, then a cosine down to final_fraction * learning_rate at the last round).
  c.client_optimizer.schedule = "constant"
  c.client_optimizer.warmup_rounds = 0
  c.client_optimizer.final_fraction = 0.1
  c.server_optimizer = ml_collections.ConfigDict()
  c.server_optimizer.name = "fedavg"  # fedavg | fedavgm | fedadam | fedyogi
  c.server_optimizer.learning_rate = 1.0
  c.server_optimizer.momentum = 0.9  # fedavgm
  c.server_optimizer.b1 = 0.9  # fedadam / fedyogi
  c.server_optimizer.b2 = 0.99
  c.server_optimizer.eps = 1e-3
  # Aggregation weights: paper (n_i * L_i, Eq. 1) | samples | uniform | depth | fedavg_naive |
  # homogeneous.
  c.weighting = "paper"
  c.loss = "deepest"  # deepest (the paper) | all (sum over exits <= depth) | distill (all + KL)
  c.distill_weight = 1.0  # loss "distill": weight of the mutual KL between exits
  c.distill_temperature = 1.0
  c.fedprox_mu = 0.0  # FedProx proximal term; 0 disables it
  # SpecAugment-style time masking at every local step (wav2vec 2.0 / HuBERT fine-tuning's
  # mask_time_prob / mask_time_length): each frame of the cached conv features starts a span of
  # time_mask_span frames, replaced by the utterance's mean feature, with probability
  # time_mask_prob; 0 disables it
  c.time_mask_prob = 0.0
  c.time_mask_span = 10
  c.chunk_size = "auto"  # clients trained at once inside the compiled round: "auto" or an int
  # On CPU: split the host into this many JAX devices so that clients train on every core at once
  # ("auto": one per available core; 1: a single device). No effect on GPU/TPU runs.
  c.cpu_devices = "auto"
  # Compiled programs kept on disk so that the next run with this config skips compiling them:
  # "auto" ($FEDEXIT_COMPILATION_CACHE if set, else <$FEDEXIT_CACHE or ~/.cache/fedexit_jax>/xla),
  # a folder, or None (off).
  c.compilation_cache = "auto"
  # The frozen CNN's features of the corpus, kept on disk so that the next run with this corpus
  # and checkpoint skips computing them: "auto" ($FEDEXIT_FEATURE_CACHE if set, else
  # <$FEDEXIT_CACHE or ~/.cache/fedexit_jax>/features), a folder, or None (off).
  c.feature_cache = "auto"
  # Multi-process runs (jax.distributed): one run over the devices of several processes or hosts.
  # coordinator "host:port" of process 0 (with num_processes and this process's process_id; or
  # let `fedexit launch --local N -- run ...` set the three); "" = one process, unless `detect`
  # finds a SLURM, Open MPI or Cloud TPU job of several processes. Timeouts in seconds: joining,
  # and how long a silent process is waited for before the run stops with an error.
  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator = ""
  c.distributed.num_processes = 1
  c.distributed.process_id = 0
  c.distributed.detect = True
  c.distributed.initialization_timeout = 300
  c.distributed.heartbeat_timeout = 100

  # Early-exit inference reported at the end: a fixed exit per tier, and exit at the first head
  # whose max softmax probability reaches each threshold.
  c.exit_policy = ml_collections.ConfigDict()
  c.exit_policy.thresholds = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)

  # Simulated wall-clock: a speed-1.0 device runs this many FLOP/s (a phone-class NPU).
  c.accounting = ml_collections.ConfigDict()
  c.accounting.flops_per_second = 1e11
  return c
