"""metrics.py: JSON lines, TensorBoard scalars, resume truncation, summary, early-exit policies."""
from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from fedexit_jax import metrics


def _row(r):
  return {"error": {"3": np.float32(0.5 - 0.01 * r), "6": jnp.asarray(0.4 - 0.01 * r)},
          "loss": np.float64(1.0 / r), "clients": np.int32(10), "nonfinite": 0}


def test_rows_are_plain_json_with_round_and_error_per_exit(tmp_path):
  with metrics.MetricsWriter(tmp_path, tensorboard=False) as w:
    row = w.write(3, _row(3))
  line = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert len(line) == 1
  parsed = json.loads(line[0])
  assert parsed == row
  assert parsed["round"] == 3
  assert parsed["error"] == {"3": pytest.approx(0.47), "6": pytest.approx(0.37)}
  assert isinstance(parsed["clients"], int) and isinstance(parsed["loss"], float)


def test_to_json_value_conversions():
  assert metrics.to_json_value(np.float32(float("nan"))) is None
  assert metrics.to_json_value(jnp.arange(3)) == [0, 1, 2]
  assert metrics.to_json_value({1: np.bool_(True)}) == {"1": True}
  with pytest.raises(TypeError, match="object"):
    metrics.to_json_value(object())


def test_flatten_scalars_names_exits():
  flat = metrics.flatten_scalars({"error": {"3": 0.5, "12": 0.2}, "loss": 1.5, "name": "x"})
  assert flat == {"error/exit_3": 0.5, "error/exit_12": 0.2, "loss": 1.5}


def test_resume_truncates_to_the_resumed_round(tmp_path):
  uninterrupted = tmp_path / "a"
  with metrics.MetricsWriter(uninterrupted, tensorboard=False) as w:
    for r in range(1, 7):
      w.write(r, _row(r))
  stopped = tmp_path / "b"
  with metrics.MetricsWriter(stopped, tensorboard=False) as w:
    for r in range(1, 6):  # crashed after round 5; its last checkpoint was round 3
      w.write(r, _row(r))
  with metrics.MetricsWriter(stopped, resume_round=3, tensorboard=False) as w:
    assert [r["round"] for r in metrics.read_metrics(stopped)] == [1, 2, 3]
    for r in range(4, 7):
      w.write(r, _row(r))
  assert ((stopped / "metrics.jsonl").read_bytes()
          == (uninterrupted / "metrics.jsonl").read_bytes())
  # A fresh (non-resumed) writer starts an empty file.
  metrics.MetricsWriter(stopped, tensorboard=False).close()
  assert metrics.read_metrics(stopped) == []


def _events(path):
  from tensorboardX.proto import event_pb2
  data, pos, out = path.read_bytes(), 0, []
  while pos < len(data):  # TFRecord framing: len u64, crc u32, payload, crc u32
    n = int.from_bytes(data[pos:pos + 8], "little")
    out.append(event_pb2.Event.FromString(data[pos + 12:pos + 12 + n]))
    pos += 12 + n + 4
  return out


def test_tensorboard_events_written_and_purged_on_resume(tmp_path):
  with metrics.MetricsWriter(tmp_path) as w:
    w.write(1, _row(1))
    w.write(2, _row(2))
  files = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert len(files) == 1
  tags = {}
  for ev in _events(files[0]):
    for v in ev.summary.value:
      tags.setdefault(v.tag, []).append((ev.step, v.simple_value))
  assert [s for s, _ in tags["error/exit_3"]] == [1, 2]
  assert tags["error/exit_6"][1][1] == pytest.approx(0.38)
  # Resuming from round 1 tells TensorBoard to drop the old file's events from step 2 on.
  with metrics.MetricsWriter(tmp_path, resume_round=1) as w:
    w.write(2, _row(2))
  new = [f for f in (tmp_path / "tensorboard").glob("events.out.tfevents.*") if f not in files]
  assert len(new) == 1
  starts = [ev.step for ev in _events(new[0]) if ev.HasField("session_log")
            and ev.session_log.status == ev.session_log.START]
  assert starts == [2]


def test_summary_table_final_and_best():
  rows = [{"round": 1, "error": {"3": 0.5, "12": 0.6}},
          {"round": 2, "error": {"3": 0.3, "12": 0.4}},
          {"round": 3, "error": {"3": 0.35, "12": 0.25}}]
  md = metrics.summary_table(rows)
  lines = md.splitlines()
  assert lines[0] == "after round 3"
  assert "| 3 | 35.00 | 30.00 | 2 |" in lines
  assert "| 12 | 25.00 | 25.00 | 3 |" in lines
  assert lines.index("| 3 | 35.00 | 30.00 | 2 |") < lines.index("| 12 | 25.00 | 25.00 | 3 |")
  plain = metrics.summary_table(rows, markdown=False)
  assert "|" not in plain and "35.00" in plain
  assert "no rounds" in metrics.summary_table([{"round": 1}])


def test_tier_metrics_table_reads_each_tier_at_its_deepest_exit():
  tiers = [dict(max_depth=3), dict(max_depth=10), dict(max_depth=2)]
  md = metrics.tier_metrics_table(tiers, (3, 9), {"wer": [0.99, 0.5], "cer": [0.6, 0.25]})
  lines = md.splitlines()
  assert lines[0] == "| tier | depth | exit | wer % | cer % |"
  assert lines[2] == "| tier 0 | 3 | 3 | 99.00 | 60.00 |"
  assert lines[3] == "| tier 1 | 10 | 9 | 50.00 | 25.00 |"  # layer 10 has no exit: exit 9
  assert lines[4] == "| tier 2 | 2 | - | - | - |"


def test_early_exit_policies_hand_derived():
  # 2 exits (layers 3, 6), 4 examples, 2 classes. Labels all 0.
  # exit 3: confident and right on ex0, confident and wrong on ex1, unsure and wrong on ex2/ex3.
  # exit 6: right on all but ex3.
  p3 = np.array([[0.95, 0.05], [0.02, 0.98], [0.4, 0.6], [0.45, 0.55]])
  p6 = np.array([[0.9, 0.1], [0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
  logits = np.log(np.stack([p3, p6]))
  labels = np.zeros(4, np.int32)
  out = metrics.early_exit_policies(logits, labels, (3, 6), thresholds=(0.9, 0.5),
                                    fixed={"tier depth 3": 3, "tier depth 6": 6})
  by = {o["policy"]: o for o in out}
  assert by["tier depth 3"]["accuracy"] == pytest.approx(1 / 4)  # ex0 only
  assert by["tier depth 6"] == {"policy": "tier depth 6", "threshold": None, "avg_depth": 6.0,
                                "accuracy": pytest.approx(3 / 4)}
  # t=0.9: ex0, ex1 leave at 3 (right, wrong); ex2, ex3 go to 6 (right, wrong): acc 2/4, depth 4.5
  assert by["confidence >= 0.9"]["avg_depth"] == pytest.approx(4.5)
  assert by["confidence >= 0.9"]["accuracy"] == pytest.approx(0.5)
  # t=0.5: everyone leaves at 3 (max prob >= 0.5 always): acc as fixed exit 3, depth 3.
  assert by["confidence >= 0.5"]["avg_depth"] == pytest.approx(3.0)
  assert by["confidence >= 0.5"]["accuracy"] == pytest.approx(1 / 4)
  with pytest.raises(ValueError, match="logits must be"):
    metrics.early_exit_policies(logits[:1], labels, (3, 6))


def test_write_summary_sections(tmp_path):
  with metrics.MetricsWriter(tmp_path, tensorboard=False) as w:
    w.write(1, {"error": {"3": 0.5, "6": 0.4}})
  policies = [{"policy": "tier depth 3", "threshold": None, "avg_depth": 3.0, "accuracy": 0.5}]
  path = metrics.write_summary(tmp_path, policies=policies, tier_table_md="| t |",
                               extra={"Time to 50% error": "12 s"})
  text = path.read_text()
  assert path.name == "summary.md"
  assert "| 6 | 40.00 | 40.00 | 1 |" in text
  assert "| tier depth 3 | 3.00 | 50.00 |" in text
  assert "## Cost per device tier\n\n| t |" in text and "## Time to 50% error\n\n12 s" in text
