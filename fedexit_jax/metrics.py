"""Per-round metrics as JSON lines and TensorBoard scalars; summary table; early-exit policies.

`WORKDIR/metrics.jsonl` holds one object per evaluated round, e.g.
`{"round": 3, "error": {"3": 0.41, "6": 0.33}, "loss": 1.2}`: nested dicts of numbers, exits
keyed by their layer as a string. TensorBoard gets the same numbers as scalars, nested keys joined
with "/" and layer keys written `exit_<layer>` (`error/exit_3`).

Resume: the writer drops rows after the resumed round, and TensorBoard is told to purge events
from that step on, so a resumed run's files read exactly like an uninterrupted run's.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def to_json_value(x: Any) -> Any:
  """numpy/jax scalars and arrays -> float/int/bool/lists; non-finite floats -> None."""
  if isinstance(x, Mapping):
    return {str(k): to_json_value(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_json_value(v) for v in x]
  if isinstance(x, (str, type(None))):
    return x
  if isinstance(x, (bool, np.bool_)):
    return bool(x)
  if isinstance(x, (int, np.integer)):
    return int(x)
  if isinstance(x, (float, np.floating)):
    return float(x) if math.isfinite(x) else None
  if hasattr(x, "__array__"):  # np.ndarray, jax.Array
    arr = np.asarray(x)
    if arr.ndim == 0:
      return to_json_value(arr.item())
    return to_json_value(arr.tolist())
  raise TypeError(f"cannot write a {type(x).__name__} into metrics.jsonl: {x!r}")


def flatten_scalars(row: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
  """{"error": {"3": 0.4}} -> {"error/exit_3": 0.4}; non-numeric leaves are skipped."""
  out = {}
  for k, v in row.items():
    name = f"exit_{k}" if str(k).isdigit() else str(k)
    tag = f"{prefix}{name}"
    if isinstance(v, Mapping):
      out.update(flatten_scalars(v, tag + "/"))
    elif isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None:
      out[tag] = float(v)
  return out


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
  """Rows of a metrics.jsonl (a file or the workdir holding it); [] if absent."""
  path = Path(path)
  if path.is_dir():
    path = path / METRICS_FILE
  if not path.exists():
    return []
  rows = []
  for i, line in enumerate(path.read_text().splitlines()):
    if line.strip():
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{i + 1} is not a JSON object: {e}") from None
  return rows


def _rewrite_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
  """Replaces the file atomically (write a sibling, rename over)."""
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w") as f:
    for row in rows:
      f.write(json.dumps(row, sort_keys=True) + "\n")
  os.replace(tmp, path)


class MetricsWriter:
  """Appends rows to WORKDIR/metrics.jsonl and TensorBoard event files.

  `resume_round`: None starts a fresh file; an int keeps only rows with round <= resume_round
  (the rounds the restored checkpoint already covers) and continues after them.
  """

  def __init__(self, workdir: str | Path, resume_round: int | None = None,
               tensorboard: bool = True):
    self.path = Path(workdir) / METRICS_FILE
    self.path.parent.mkdir(parents=True, exist_ok=True)
    kept = [] if resume_round is None else [
        r for r in read_metrics(self.path) if r.get("round", 0) <= resume_round]
    _rewrite_rows(self.path, kept)
    self._file = open(self.path, "a")
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # heavy import, only when used
      purge = None if resume_round is None else resume_round + 1
      # A unique suffix: tensorboardX names files by the second, and a resumed writer started
      # within the same second would otherwise overwrite the previous file.
      self._tb = SummaryWriter(str(Path(workdir) / TENSORBOARD_DIR), purge_step=purge,
                               filename_suffix=f".{os.getpid()}.{time.time_ns()}")

  def write(self, round_: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Writes one round; returns the row as written (JSON types)."""
    row = {"round": int(round_), **to_json_value(dict(metrics))}
    self._file.write(json.dumps(row, sort_keys=True) + "\n")
    self._file.flush()
    if self._tb is not None:
      for tag, value in flatten_scalars({k: v for k, v in row.items() if k != "round"}).items():
        self._tb.add_scalar(tag, value, global_step=int(round_))
      self._tb.flush()
    return row

  def close(self) -> None:
    self._file.close()
    if self._tb is not None:
      self._tb.close()

  def __enter__(self) -> "MetricsWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _fmt(x: Any, pct: bool) -> str:
  if x is None:
    return "-"
  return f"{100 * x:.2f}" if pct else f"{x:.4g}"


def summary_table(rows: Sequence[Mapping[str, Any]], key: str = "error",
                  markdown: bool = True) -> str:
  """Final and best value of `rows[*][key]` per exit, as percentages (key "error" by default).

  | exit | final error % | best error % | best round |
  """
  rows = [r for r in rows if isinstance(r.get(key), Mapping)]
  if not rows:
    return f"(no rounds with {key!r} yet)"
  exits = sorted({e for r in rows for e in r[key]}, key=lambda e: (len(e), e))
  header = ["exit", f"final {key} %", f"best {key} %", "best round"]
  lines = []
  final = rows[-1]
  for e in exits:
    vals = [(r[key][e], r["round"]) for r in rows if r[key].get(e) is not None]
    best = min(vals) if vals else (None, None)
    lines.append([e, _fmt(final[key].get(e), True), _fmt(best[0], True), str(best[1] or "-")])
  caption = f"after round {final['round']}"
  if markdown:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return f"{caption}\n\n" + "\n".join(out)
  widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
  out = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
  out += ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
  return caption + "\n" + "\n".join(out)


def tier_metrics_table(tiers: Sequence[Mapping[str, Any]], exits: Sequence[int],
                       scores: Mapping[str, Sequence[float]]) -> str:
  """Each device tier's final test metrics, read at the deepest evaluated exit it reaches (what
  its devices would run): | tier | depth | exit | <metric> % | ...; "-" for a tier below every
  evaluated exit. `scores`: {metric: values aligned with `exits`}."""
  keys = list(scores)
  out = ["| tier | depth | exit | " + " | ".join(f"{k} %" for k in keys) + " |",
         "|" + "---|" * (3 + len(keys))]
  for i, t in enumerate(tiers):
    depth = int(t["max_depth"])
    reach = [j for j, e in enumerate(exits) if e <= depth]
    if not reach:
      out.append(f"| tier {i} | {depth} | - | " + " | ".join("-" for _ in keys) + " |")
      continue
    j = reach[-1]
    out.append(f"| tier {i} | {depth} | {exits[j]} | "
               + " | ".join(_fmt(float(scores[k][j]), True) for k in keys) + " |")
  return "\n".join(out)


# ----------------------------------------------------------------------------- early exit


def early_exit_policies(logits: Any, labels: Any, exits: Sequence[int],
                        thresholds: Iterable[float] = (),
                        fixed: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
  """Accuracy against average exit depth for early-exit inference policies.

  logits: [E, N, C] from the E exit heads (exit e reads layer exits[e]); labels: [N].
  See `policies_from_confidence` for the policies.
  """
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels)
  exits = list(exits)
  if logits.ndim != 3 or logits.shape[0] != len(exits) or logits.shape[1] != labels.shape[0]:
    raise ValueError(f"logits must be [E={len(exits)}, N={labels.shape[0]}, C], "
                     f"got {logits.shape}")
  z = logits - logits.max(-1, keepdims=True)
  prob = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
  return policies_from_confidence(logits.argmax(-1) == labels[None], prob.max(-1), exits,
                                  thresholds, fixed)


def policies_from_confidence(correct: Any, confidence: Any, exits: Sequence[int],
                             thresholds: Iterable[float] = (),
                             fixed: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
  """The policies from per-exit correctness and max softmax probability, both [E, N] (what
  federated.evaluate returns):
  - `fixed`: name -> exit layer, e.g. {"tier depth 3": 3, "tier depth 6": 6}: every example
    leaves at that exit (what a device of that tier runs).
  - each threshold t: an example leaves at the first exit whose max softmax probability >= t
    (the last exit if none does).
  Returns dicts {"policy", "threshold", "avg_depth", "accuracy"}; avg_depth is the mean number of
  Transformer layers run per example, the compute proxy.
  """
  correct, conf = np.asarray(correct, bool), np.asarray(confidence)
  exits = list(exits)
  if correct.shape != conf.shape or correct.shape[0] != len(exits):
    raise ValueError(f"correct {correct.shape} and confidence {conf.shape} must both be "
                     f"[E={len(exits)}, N]")
  out = []
  for name, layer in (fixed or {}).items():
    if layer not in exits:
      raise ValueError(f"fixed policy {name!r}: layer {layer} is not an exit {exits}")
    e = exits.index(layer)
    out.append({"policy": name, "threshold": None, "avg_depth": float(layer),
                "accuracy": float(correct[e].mean())})
  n = correct.shape[1]
  for t in thresholds:
    passes = conf >= t
    passes[-1] = True  # the last exit always answers
    first = passes.argmax(0)  # [N] index of the first confident exit
    depth = np.asarray(exits)[first]
    out.append({"policy": f"confidence >= {t:g}", "threshold": float(t),
                "avg_depth": float(depth.mean()),
                "accuracy": float(correct[first, np.arange(n)].mean())})
  return out


def policy_table(policies: Sequence[Mapping[str, Any]]) -> str:
  """Early-exit policies as markdown: | policy | avg depth | accuracy % |."""
  out = ["| policy | average exit depth | accuracy % |", "|---|---|---|"]
  out += [f"| {p['policy']} | {p['avg_depth']:.2f} | {100 * p['accuracy']:.2f} |"
          for p in policies]
  return "\n".join(out)


SUMMARY_FILE = "summary.md"


def write_summary(workdir: str | Path, rows: Sequence[Mapping[str, Any]] | None = None,
                  policies: Sequence[Mapping[str, Any]] | None = None,
                  tier_table_md: str | None = None,
                  extra: Mapping[str, str] | None = None,
                  keys: Sequence[str] = ("error",)) -> Path:
  """Writes WORKDIR/summary.md: each metric of `keys` per exit (from `rows`, default
  metrics.jsonl; "error", or e.g. "wer", "cer", "eer"), early-exit policies, the per-tier cost
  table (`accounting.markdown_tier_table`), and any `extra` sections {title: markdown}. Returns
  its path."""
  rows = read_metrics(workdir) if rows is None else rows
  parts = ["# Run summary"]
  for key in keys:
    parts += ["", f"## Test {key} per exit", "", summary_table(rows, key)]
  if policies:
    parts += ["", "## Early-exit inference", "", policy_table(policies)]
  if tier_table_md:
    parts += ["", "## Cost per device tier", "", tier_table_md]
  for title, body in (extra or {}).items():
    parts += ["", f"## {title}", "", body]
  path = Path(workdir) / SUMMARY_FILE
  path.write_text("\n".join(parts) + "\n")
  return path
