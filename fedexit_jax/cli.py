"""The `fedexit` command: run the federated job, make the offline corpus, convert checkpoints.

A thin layer: it parses arguments, loads and checks the config, and calls one library function
per sub-command (imported lazily, so `--help` is fast and works with optional parts missing).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from fedexit_jax import config_utils

_RUN_HELP = """\
Simulates federated fine-tuning of a wav2vec2/HuBERT backbone with early exits: every round
samples clients, each trains only up to its device tier's exit depth, and the server merges the
updates layer by layer (the paper's depth-aware aggregation), then evaluates the global model on
the central test set at every exit.

Without --config it runs configs/default.py: the offline synthetic spoken-keyword corpus, the
small 12-layer backbone self-supervised-pretrained offline (builtin:small_ssl), 100 speaker
clients in two tiers (exit 3 / exit 6); a few minutes on a
laptop CPU.

The paper's tasks, each offline by default (the corpus is generated once, in the real corpus's
layout) and on the real corpus with --config.data.source=folder --config.data.dir=DIR:
  configs/kws12.py   keyword spotting, 12 classes (= the default)      metrics: error
  configs/kws35.py   keyword spotting, 35 classes                      metrics: error
  configs/sid.py     speaker id (VoxCeleb1 layout) + verification      metrics: error, eer
  configs/er.py      emotion, 4 classes (IEMOCAP layout; offline: a prosodic stand-in)  error
  configs/asr.py     speech recognition, CTC (LibriSpeech layout)      metrics: wer, cer (greedy),
                     wer_lexicon, cer_lexicon (beam search over the training words' lexicon)

Workdir outputs:
  config.json          the config this run used
  metrics.jsonl        one JSON object per evaluated round: {"round": r, "error": {"3": ..}, ..}
                       (one {exit: value} map per task metric: error, eer, wer, cer, ...)
  tensorboard/         the same metrics as TensorBoard scalars (tensorboard --logdir WORKDIR)
  checkpoints/<round>/ orbax checkpoints (server params, optimizer state, round, RNG)
  plots/*.png          each metric per exit over rounds, cost per tier, accuracy vs exit depth
  summary.md           final metrics per exit, early-exit policies (classification),
                       compute/memory/upload per tier

Config overrides: --config.KEY=VALUE, nested keys with dots; values are parsed with the type of
the key's default (lists/dicts as JSON or Python literals). Unknown keys are errors.

Examples:
  fedexit run --workdir runs/default
  fedexit run --workdir runs/quick --config.rounds=10 --config.clients_per_round=5
  fedexit run --config configs/paper_kws12.py --workdir runs/kws12 \\
      --config.data.dir=/data/speech_commands_v0.02
  fedexit run --workdir runs/ablation --config.weighting=samples \\
      --config.tiers='[{"fraction": 1.0, "max_depth": 6, "speed": 1.0}]'
  fedexit run --config configs/asr.py --workdir runs/asr
  fedexit run --workdir runs/default --resume     # continue a stopped run
  fedexit run --workdir runs/x --dry-run          # check and print the config, do nothing
"""

_MAIN_HELP = """\
Federated fine-tuning of self-supervised speech models (wav2vec 2.0 / HuBERT) with early exits,
simulated in JAX.

  fedexit run ...          run a federated experiment (see `fedexit run --help`)
  fedexit data synth ...   generate the offline synthetic spoken-keyword corpus
  fedexit convert SRC ...  convert a PyTorch/Hugging Face checkpoint to this project's format
  fedexit pretrain ...     HuBERT-style self-supervised pretraining of a backbone (offline)
  fedexit probe ...        linear probe of every layer of the frozen backbone on the task
  fedexit launch --local N -- run ...
                           one run in N processes on this machine (jax.distributed)
"""

_LAUNCH_HELP = """\
Runs one `fedexit run` in N processes on this machine, joined through jax.distributed
(coordinator: process 0 on 127.0.0.1): the round's clients are spread over the devices of all
processes, process 0 writes the workdir's files, all write the checkpoints. Each process gets
cores/N CPU devices unless the run's arguments set --config.cpu_devices. If a process fails, the
others are stopped and the launch fails naming it.

On a cluster, start `fedexit run` once per process with the cluster's launcher instead (srun,
mpirun, a TPU pod's): JAX finds the job by itself (config distributed.detect), or pass
--config.distributed.coordinator=HOST:PORT, .num_processes and .process_id.

Example:
  fedexit launch --local 2 -- run --config configs/smoke.py --workdir runs/mp
  fedexit launch --local 2 -- run --config configs/smoke.py --workdir runs/mp --resume
"""


def _run_parser(sub) -> argparse.ArgumentParser:
  p = sub.add_parser("run", help="run a federated experiment", description=_RUN_HELP,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default=None, metavar="PATH[:ARG]",
                 help="Python config file with get_config() (default: configs/default.py)")
  p.add_argument("--workdir", required=True, metavar="DIR",
                 help="folder for checkpoints, metrics, plots (created if missing)")
  p.add_argument("--resume", action="store_true",
                 help="continue from the newest checkpoint in --workdir (same config)")
  p.add_argument("--dry-run", action="store_true",
                 help="load, override and validate the config, check the workdir, print the "
                      "config and exit")
  return p


def _data_parser(sub) -> None:
  p = sub.add_parser("data", help="datasets: generate the offline corpus",
                     description="Dataset tools.")
  dsub = p.add_subparsers(dest="data_command", metavar="{synth}")
  dsub.required = True
  s = dsub.add_parser(
      "synth", help="generate the synthetic spoken-keyword corpus (Speech Commands layout)",
      description="Writes a spoken-keyword corpus synthesised with eSpeak NG in the Speech "
                  "Commands folder layout (word/<speaker>_nohash_<n>.wav, validation_list.txt, "
                  "testing_list.txt, _background_noise_/), deterministic from the seed. "
                  "Synthetic speech: for offline runs and tests, not for reporting accuracy on "
                  "real speech.",
      formatter_class=argparse.RawDescriptionHelpFormatter)
  try:
    from fedexit_jax.data import synth
  except ImportError as e:
    s.set_defaults(_unavailable=f"the corpus generator is not available: {e}")
    s.add_argument("rest", nargs=argparse.REMAINDER)
  else:
    synth.add_arguments(s)


def _convert_parser(sub) -> None:
  p = sub.add_parser(
      "convert", help="convert a PyTorch / Hugging Face wav2vec2 or HuBERT checkpoint",
      description="Converts a PyTorch checkpoint (a Hugging Face folder or Hub id in the local "
                  "cache, a .bin/.safetensors file, or a fairseq .pt) of wav2vec2/HuBERT to this "
                  "project's format: a folder usable as --config.model.checkpoint. Every tensor "
                  "is checked by name and shape; missing or unexpected names are errors.\n\n"
                  "Example:\n  fedexit convert facebook/hubert-base-ls960 --out ckpt/hubert_base",
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("src", metavar="SRC", help="checkpoint folder, file, or Hub id")
  p.add_argument("--out", required=True, metavar="DIR", help="output folder")


def _pretrain_parser(sub) -> None:
  from fedexit_jax import pretrain  # light: jax, optax, numpy
  p = sub.add_parser(
      "pretrain", help="self-supervised (HuBERT-style) pretraining of a backbone, offline",
      description="Masked prediction of k-means MFCC codes (HuBERT's first iteration) on "
                  "unlabelled audio; writes a folder usable as --config.model.checkpoint. The "
                  "default run's built-in `builtin:small_ssl` was made with `--recipe exits`; "
                  "`builtin:small_ssl_hubert` with the defaults below; ASR's "
                  "`builtin:small_ssl_sentences` with `--recipe exits --layout librispeech "
                  "--batch-size 16`.",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  pretrain.add_arguments(p)


def _probe_parser(sub) -> None:
  p = sub.add_parser(
      "probe", help="linear probe per layer of the frozen backbone on the config's task",
      description="Freezes the config's backbone (model.checkpoint), statistics-pools every "
                  "Transformer layer's hidden states, fits a logistic regression per layer on "
                  "the task's training clients' utterances and scores it on the test speakers: "
                  "how SUPERB and the paper pick the task's best layer (the deep tier's depth). "
                  "Writes WORKDIR/probe.json ({\"layer\": {\"1\": acc, ...}, ...}) and "
                  "WORKDIR/probe.png. Takes --config FILE and --config.KEY=VALUE like `run`.\n\n"
                  "Example:\n  fedexit probe --workdir runs/probe\n  fedexit probe --workdir "
                  "runs/probe_hubert --config.model.checkpoint=builtin:small_ssl_hubert",
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default=None, metavar="PATH[:ARG]",
                 help="Python config file with get_config() (default: configs/default.py)")
  p.add_argument("--workdir", required=True, metavar="DIR",
                 help="folder for probe.json and probe.png (created if missing)")


def _launch_parser(sub) -> None:
  p = sub.add_parser("launch", help="one run in N local processes (jax.distributed)",
                     description=_LAUNCH_HELP,
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     usage="fedexit launch --local N [--port PORT] -- run ARGS...")
  p.add_argument("--local", type=int, required=True, metavar="N", help="processes to start")
  p.add_argument("--port", type=int, default=None,
                 help="the coordinator's port on 127.0.0.1 (default: a free one)")
  p.add_argument("run_args", nargs=argparse.REMAINDER,
                 help="after --: the `run` command and its arguments")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="fedexit", description=_MAIN_HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command",
                              metavar="{run,data,convert,pretrain,probe,launch}")
  sub.required = True
  _run_parser(sub)
  _data_parser(sub)
  _convert_parser(sub)
  _pretrain_parser(sub)
  _probe_parser(sub)
  _launch_parser(sub)
  return parser


def load_run_config(config_path: str | None, overrides: Sequence[str]):
  """Config file (default configs/default.py) + overrides, validated. Raises ConfigError."""
  path = config_path or str(config_utils.default_config_path())
  config = config_utils.load_config(path)
  config = config_utils.apply_overrides(config, overrides)
  config_utils.validate_config(config)
  return config


def _run(args, overrides: Sequence[str]) -> int:
  from fedexit_jax import checkpoint, pipeline

  config = load_run_config(args.config, overrides)
  pipeline.preflight(config)  # data folder and checkpoint on disk: refused here, not later
  if args.dry_run:
    step = checkpoint.check_workdir(args.workdir, config, args.resume, write_config=False)
    print(config)
    print(f"workdir {args.workdir}: " + (f"would resume from round {step}" if step is not None
                                         else "would start from round 0"))
    return 0
  from fedexit_jax import train  # the heavy part: jax, data, models

  train.train_and_evaluate(config, args.workdir, resume=args.resume)
  return 0


def _convert(args) -> int:
  from fedexit_jax import convert

  enc_config, params = convert.load_pytorch_checkpoint(args.src)
  convert.save_converted(args.out, enc_config, params)
  print(f"converted {args.src} -> {args.out}")
  return 0


def _is_user_error(e: BaseException) -> bool:
  """Errors that name a problem in the user's input: printed as one line, no traceback."""
  if isinstance(e, (config_utils.ConfigError, FileNotFoundError, FileExistsError)):
    return True
  # Modules imported only once a sub-command runs.
  for module, name in (("fedexit_jax.checkpoint", "WorkdirError"),
                       ("fedexit_jax.convert.pytorch", "CheckpointMismatchError"),
                       ("fedexit_jax.convert.pytorch", "CheckpointFileError"),
                       ("fedexit_jax.data.audio", "AudioError"),
                       ("fedexit_jax.data.speech_commands", "DataError"),
                       ("fedexit_jax.train", "DivergedError"),
                       ("fedexit_jax.launch", "LaunchError"),
                       ("fedexit_jax.runtime", "DistributedError")):
    cls = getattr(sys.modules.get(module), name, None)
    if cls is not None and isinstance(e, cls):
      return True
  return False


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of the `fedexit` console script; returns the exit status (2: bad input)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  try:
    if argv[:1] == ["launch"] and "--" in argv:  # the run's own arguments pass through untouched
      cut = argv.index("--")
      args = parser.parse_args(argv[:cut])
      from fedexit_jax import launch
      return launch.main(args.local, argv[cut + 1:], args.port)
    overrides, rest = config_utils.split_config_args(argv)
    args = parser.parse_args(rest)
    if overrides and args.command not in ("run", "probe"):
      parser.error(f"--config.* overrides apply to `fedexit run` and `probe` only: {overrides}")
    if args.command == "run":
      return _run(args, overrides)
    if args.command == "data":
      if getattr(args, "_unavailable", None):
        parser.error(args._unavailable)
      from fedexit_jax.data import synth
      return int(synth.main(args) or 0)
    if args.command == "pretrain":
      from fedexit_jax import pretrain
      return pretrain.main(args)
    if args.command == "launch":
      parser.error("fedexit launch --local N -- run ARGS...: the run's arguments follow `--`")
    if args.command == "probe":
      from fedexit_jax import probe
      result = probe.run_probe(load_run_config(args.config, overrides), args.workdir)
      print(f"probe accuracy per layer {result['layer']}; best layer {result['best_layer']}; "
            f"wrote {args.workdir}/probe.json, probe.png")
      return 0
    return _convert(args)
  except Exception as e:  # pylint: disable=broad-except
    if not _is_user_error(e):
      raise
    print(f"fedexit: error: {' '.join(str(e).split())}", file=sys.stderr)  # one line
    return 2


if __name__ == "__main__":
  sys.exit(main())
