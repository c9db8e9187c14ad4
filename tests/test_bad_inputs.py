"""Bad inputs a new user meets, through `fedexit` itself: each is built here in a temp folder and
must end as ONE line `fedexit: error: ...` with exit status 2 (or, for a damaged checkpoint, a
warning and a resume from the newest intact round), and nothing already in the workdir is lost.
The README's table of bad inputs lists these cases."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fedexit_jax import checkpoint, cli
from fedexit_jax import config_utils as cu

from test_data_speech_commands import make_mini_folder  # pylint: disable=wrong-import-order

# A backbone small enough that building it costs nothing (no checkpoint to read).
TINY_MODEL = [
    "--config.model.checkpoint=None", "--config.model.exits=(2, 4)", "--config.cpu_devices=1",
    "--config.progress_bar=False",
    ('--config.tiers=[{"fraction": 0.5, "max_depth": 2, "speed": 1.0}, '
     '{"fraction": 0.5, "max_depth": 4, "speed": 2.0}]'),
    "--config.model.overrides.hidden_size=32", "--config.model.overrides.num_hidden_layers=4",
    "--config.model.overrides.num_attention_heads=2",
    "--config.model.overrides.intermediate_size=64",
    "--config.model.overrides.conv_dim=(16, 16, 16, 16, 16, 16, 16)",
    "--config.model.overrides.num_conv_pos_embeddings=8",
    "--config.model.overrides.num_conv_pos_embedding_groups=2",
]


def _snapshot(root: Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def workdir(tmp_path):
  """A workdir that already holds a user's file, which no failure may touch."""
  w = tmp_path / "work"
  w.mkdir()
  (w / "notes.txt").write_text("my notes\n")
  return w


def _fails(capsys, argv, *needles):
  """Runs `fedexit argv`: exit status 2, one line on stderr, naming every needle."""
  rc = cli.main(argv)
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if l.startswith("fedexit: error: ")]
  assert rc == 2, err[-3000:]
  assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])
  return lines[0]


def _kept(workdir: Path, before: dict[str, bytes]) -> None:
  after = _snapshot(workdir)
  for name, data in before.items():
    assert after.get(name) == data, f"{name} was lost or changed"


# ------------------------------------------------------------------------------- config files

@pytest.mark.parametrize("text, needles", [
    ("def get_config(:\n  pass\n", ["cannot be loaded: SyntaxError", "(line 1)"]),
    ("import ml_collections\ndef get_config():\n  return {}['rounds']\n",
     ["get_config() of", "raised KeyError"]),
    ("raise RuntimeError('half\\nwritten')\n", ["cannot be loaded: RuntimeError: half written"]),
])
def test_config_file_that_fails_is_one_line(tmp_path, workdir, capsys, text, needles):
  bad = tmp_path / "bad.py"
  bad.write_text(text)
  before = _snapshot(workdir)
  _fails(capsys, ["run", "--config", str(bad), "--workdir", str(workdir)], str(bad), *needles)
  _kept(workdir, before)


def test_config_folder_names_the_files_in_it(tmp_path, workdir, capsys):
  folder = tmp_path / "configs"
  folder.mkdir()
  (folder / "mine.py").write_text("")
  _fails(capsys, ["run", "--config", str(folder), "--workdir", str(workdir)],
         "is a folder; pass a Python config file in it (mine.py)")


# ------------------------------------------------------------------------------- the workdir

@pytest.fixture
def readonly(tmp_path):
  """An existing, read-only workdir holding a file. Root ignores permission bits, so as root
  the folder is made immutable (chattr +i); where that is impossible the test is skipped."""
  w = tmp_path / "ro"
  w.mkdir()
  (w / "notes.txt").write_text("my notes\n")
  os.chmod(w, 0o555)
  immutable = False
  if os.geteuid() == 0:
    chattr = shutil.which("chattr")
    immutable = bool(chattr) and subprocess.run([chattr, "+i", str(w)],
                                                capture_output=True).returncode == 0
    if not immutable:
      os.chmod(w, 0o755)
      pytest.skip("running as root without chattr: no way to make a read-only folder")
  yield w
  if immutable:
    subprocess.run([shutil.which("chattr"), "-i", str(w)], check=True)
  os.chmod(w, 0o755)


@pytest.mark.parametrize("dry", [True, False])
def test_read_only_workdir_is_refused_before_any_work(readonly, capsys, dry):
  before = _snapshot(readonly)
  for w in (readonly, readonly / "sub"):
    _fails(capsys, ["run", "--workdir", str(w)] + (["--dry-run"] if dry else []),
           "is not writable")
  _kept(readonly, before)
  assert sorted(_snapshot(readonly)) == ["notes.txt"]


# ------------------------------------------------------------------------------- data

def test_missing_data_dir_is_refused_by_the_dry_run_too(tmp_path, workdir, capsys):
  for dry in (["--dry-run"], []):
    _fails(capsys, ["run", "--workdir", str(workdir), "--config.data.source=folder",
                    f"--config.data.dir={tmp_path / 'nope'}", *dry],
           "data.dir", "nope' is not a folder")
  assert sorted(_snapshot(workdir)) == ["notes.txt"]


def test_folder_with_lists_but_no_wavs(tmp_path, workdir, capsys):
  data = tmp_path / "sc"
  (data / "yes").mkdir(parents=True)
  (data / "validation_list.txt").write_text("yes/a_nohash_0.wav\n")
  (data / "testing_list.txt").write_text("yes/b_nohash_0.wav\n")
  before = _snapshot(workdir)
  _fails(capsys, ["run", "--workdir", str(workdir), "--config.data.source=folder",
                  f"--config.data.dir={data}", "--config.data.num_clients=2",
                  "--config.clients_per_round=2", *TINY_MODEL],
         "holds no <word>/*.wav files")
  _kept(workdir, before)
  assert not (workdir / checkpoint.CHECKPOINT_DIR).exists()


def test_more_clients_than_speakers(tmp_path, workdir, capsys):
  data = make_mini_folder(str(tmp_path / "sc"))  # a handful of training speakers
  before = _snapshot(workdir)
  _fails(capsys, ["run", "--workdir", str(workdir), "--config.data.source=folder",
                  f"--config.data.dir={data}", "--config.data.num_clients=9",
                  "--config.clients_per_round=2", *TINY_MODEL],
         "data.num_clients=9 but the training split has only", "speakers")
  _kept(workdir, before)
  assert not (workdir / checkpoint.CHECKPOINT_DIR).exists()


# ------------------------------------------------------------------------------- weights files

def _tiny_config_json(folder: Path) -> None:
  (folder / "config.json").write_text(json.dumps({"model_type": "hubert"}))  # HF defaults


@pytest.mark.parametrize("content", ["random", "truncated"])
def test_damaged_safetensors_is_one_line(tmp_path, capsys, content):
  folder = tmp_path / "model"
  folder.mkdir()
  _tiny_config_json(folder)
  if content == "random":
    data = np.random.default_rng(0).bytes(4096)
  else:
    from safetensors.numpy import save  # pylint: disable=import-outside-toplevel
    data = save({"w": np.ones((64, 64), np.float32)})[:-1000]
  (folder / "model.safetensors").write_bytes(data)
  _fails(capsys, ["convert", str(folder), "--out", str(tmp_path / "out")],
         "model.safetensors: not a readable safetensors file")
  assert not (tmp_path / "out").exists()
  # as a run's checkpoint: refused before any data work, by the dry run too
  for dry in (["--dry-run"], []):
    _fails(capsys, ["run", "--workdir", str(tmp_path / "w"), f"--config.model.checkpoint={folder}",
                    *dry], "model.safetensors: not a readable safetensors file")
  assert not (tmp_path / "w").exists()


class Evil:  # pickled by reference: its global is what the weights-only unpickler refuses
  def __reduce__(self):
    return (os.system, ("echo pwned > " + os.devnull,))


@pytest.mark.parametrize("legacy", [False, True])
def test_refused_pickle_is_one_line_and_never_runs(tmp_path, capsys, legacy):
  torch = pytest.importorskip("torch")
  path = tmp_path / "pytorch_model.bin"
  torch.save({"w": torch.zeros(2), "x": Evil()}, path, _use_new_zipfile_serialization=not legacy)
  line = _fails(capsys, ["convert", str(path), "--out", str(tmp_path / "out")],
                "pytorch_model.bin", "refus")
  assert "system" in line and "weights_only` set to `False`" not in line
  assert not (tmp_path / "out").exists()


def test_truncated_bin_is_one_line(tmp_path, capsys):
  torch = pytest.importorskip("torch")
  path = tmp_path / "pytorch_model.bin"
  torch.save({"w": torch.ones(256, 256)}, path)
  path.write_bytes(path.read_bytes()[:5000])
  _fails(capsys, ["convert", str(path), "--out", str(tmp_path / "out")],
         "not a readable PyTorch checkpoint")


def test_overrides_that_contradict_the_checkpoint_fail_the_dry_run(workdir, capsys):
  # The default config starts from builtin:small_ssl (hidden_size 128).
  _fails(capsys, ["run", "--workdir", str(workdir), "--dry-run",
                  "--config.model.overrides.hidden_size=32"],
         "model.overrides.hidden_size=32 contradicts the checkpoint 'builtin:small_ssl'")
  _fails(capsys, ["run", "--workdir", str(workdir), "--dry-run",
                  "--config.model.checkpoint=/nowhere/model"],
         "model.checkpoint '/nowhere/model' does not exist")
  _fails(capsys, ["run", "--workdir", str(workdir), "--dry-run",
                  "--config.model.checkpoint=builtin:nope"],
         "model.checkpoint: unknown built-in checkpoint 'builtin:nope'")
  assert sorted(_snapshot(workdir)) == ["notes.txt"]


# ------------------------------------------------------------------------------- checkpoints

def _save_rounds(workdir, config):
  rng = np.random.default_rng(0)
  for step in (1, 2):  # a leaf > 1 KiB, so orbax writes it to a data file (not inline)
    checkpoint.save(workdir, step, {"w": rng.normal(size=(64, 64)).astype(np.float32)},
                    config=config)


def test_damaged_newest_checkpoint_resume_dry_run(workdir, capsys):
  config = cu.default_config()
  _save_rounds(workdir, config)
  (checkpoint.checkpoint_dir(workdir) / "2" / "state" / "_METADATA").unlink()
  before = _snapshot(workdir)
  assert cli.main(["run", "--workdir", str(workdir), "--resume", "--dry-run"]) == 0
  out = capsys.readouterr().out
  assert "would resume from round 1" in out
  assert _snapshot(workdir) == before  # the dry run moves nothing


def test_no_intact_checkpoint_stops_with_one_line(workdir, capsys):
  config = cu.default_config()
  _save_rounds(workdir, config)
  for step in (1, 2):
    (checkpoint.checkpoint_dir(workdir) / str(step) / "state" / "_METADATA").unlink()
  before = _snapshot(workdir)
  _fails(capsys, ["run", "--workdir", str(workdir), "--resume"],
         "no checkpoint is intact", "round 2: unreadable", "round 1: unreadable")
  assert _snapshot(workdir) == before


def test_resume_with_fewer_rounds_is_one_line(workdir, capsys):
  config = cu.apply_overrides(cu.default_config(), ["rounds=2"])
  _save_rounds(workdir, config)
  _fails(capsys, ["run", "--workdir", str(workdir), "--resume", "--config.rounds=1",
                  "--dry-run"], "rounds=1: its checkpoint is already at round 2")


def test_refused_pickle_never_ran(tmp_path):
  # What the weights-only unpickler refuses never executes: the marker file is never written.
  pytest.importorskip("torch")
  marker = tmp_path / "ran"

  class Marker:
    def __reduce__(self):
      return (os.system, (f"touch {marker}",))

  path = tmp_path / "model.pt"
  with open(path, "wb") as f:
    pickle.dump({"w": 1, "x": Marker()}, f)  # a legacy-looking plain pickle
  from fedexit_jax.convert import pytorch  # pylint: disable=import-outside-toplevel
  with pytest.raises(pytorch.CheckpointFileError):
    pytorch.load_state_dict_file(path)
  assert not marker.exists()


# ------------------------------------------------------------------------------- divergence

@pytest.fixture(scope="module")
def synth_cache(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


def _tiny_run(workdir, cache, *extra):
  from test_train_e2e import TINY  # pylint: disable=import-outside-toplevel
  os.environ["FEDEXIT_CACHE"] = str(cache)
  return ["run", "--workdir", str(workdir), *[f"--config.{o}" for o in TINY], *extra]


@pytest.mark.slow
def test_every_client_excluded_stops_with_one_line(tmp_path, synth_cache, capsys):
  work = tmp_path / "w"
  # lr 1e30: every client's update overflows in its first step
  _fails(capsys, _tiny_run(work, synth_cache, "--config.client_optimizer.learning_rate=1e30",
                           "--config.stop_after_excluded_rounds=2", "--config.checkpoint_every=1"),
         "round 2: every client's update was non-finite in the last 2 rounds",
         f"round 1 in {checkpoint.checkpoint_dir(work)} is the newest finite checkpoint")
  rows = [json.loads(l) for l in (work / "metrics.jsonl").read_text().splitlines()]
  assert [r["round"] for r in rows] == [1, 2]
  assert all(r["train_loss"] is None and r["num_nonfinite"] == 3 for r in rows)
  assert checkpoint.all_steps(work) == [1] and checkpoint.damage(work, 1) is None
  assert json.loads((work / "run_info.json").read_text())["skipped_files"] == 0


@pytest.mark.slow
def test_exploding_but_finite_loss_is_warned_about(tmp_path, synth_cache, caplog):
  work = tmp_path / "w"
  rc = cli.main(_tiny_run(work, synth_cache, "--config.client_optimizer.learning_rate=1e6",
                          "--config.rounds=1"))
  assert rc == 0
  assert "over 10x that of a uniform guess" in caplog.text
  summary = (work / "summary.md").read_text()
  assert "client updates excluded as non-finite: 0 (in 0 rounds)" in summary
