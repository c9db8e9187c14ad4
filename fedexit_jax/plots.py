"""PNG plots of a run (matplotlib, Agg backend: no display needed).

Inputs are plain rows, so the plots work from files after the fact:
- error curves: the rows of metrics.jsonl (`metrics.read_metrics(workdir)`);
- tier costs: `accounting.tier_table(...)` rows ({"tier", "depth", "flops_per_step",
  "peak_memory_bytes", "upload_bytes", ...});
- accuracy vs depth: `metrics.early_exit_policies(...)` rows ({"policy", "threshold",
  "avg_depth", "accuracy"}).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fedexit_jax import metrics as metrics_lib  # noqa: E402


def _save(fig, path: str | Path) -> Path:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def plot_error_curves(rows: Sequence[Mapping[str, Any]], path: str | Path,
                      key: str = "error", chance: float | None = None) -> Path:
  """Test error (%) of every exit against the round; `chance` draws the 1 - 1/C line."""
  rows = [r for r in rows if isinstance(r.get(key), Mapping)]
  if not rows:
    raise ValueError(f"no rows with {key!r} to plot")
  exits = sorted({e for r in rows for e in r[key]}, key=int)
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for e in exits:
    pts = [(r["round"], 100 * r[key][e]) for r in rows if r[key].get(e) is not None]
    if pts:
      xs, ys = zip(*pts)
      ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, ms=3, label=f"exit {e}")
  if chance is not None:
    ax.axhline(100 * chance, color="gray", ls="--", lw=1, label="chance")
  ax.set_xlabel("round")
  ax.set_ylabel(f"test {key} (%)")
  ax.set_title(f"Global model: test {key} per exit")
  ax.grid(alpha=0.3)
  ax.legend()
  return _save(fig, path)


def plot_tier_costs(tiers: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
  """Bars per tier: training GFLOPs per local step, peak training memory (MB), upload (MB)."""
  if not tiers:
    raise ValueError("no tiers to plot")
  panels = [("flops_per_step", 1e9, "GFLOPs / local step"),
            ("peak_memory_bytes", 2**20, "peak training memory (MiB)"),
            ("upload_bytes", 2**20, "upload / round (MiB)")]
  panels = [p for p in panels if any(t.get(p[0]) is not None for t in tiers)]
  labels = [str(t.get("tier", f"depth {t['depth']}")) for t in tiers]
  fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.8), squeeze=False)
  for ax, (key, scale, title) in zip(axes[0], panels):
    vals = [(t.get(key) or 0) / scale for t in tiers]
    bars = ax.bar(labels, vals, color=[f"C{i}" for i in range(len(tiers))])
    ax.bar_label(bars, fmt="%.3g", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="y", alpha=0.3)
  fig.suptitle("Cost per device tier")
  return _save(fig, path)


def plot_accuracy_vs_depth(policies: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
  """Accuracy (%) against average exit depth: fixed exits as points, thresholds as a curve."""
  if not policies:
    raise ValueError("no early-exit policies to plot")
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  thr = sorted((p for p in policies if p.get("threshold") is not None),
               key=lambda p: p["avg_depth"])
  if thr:
    ax.plot([p["avg_depth"] for p in thr], [100 * p["accuracy"] for p in thr], "-o", ms=4,
            color="C0", label="confidence threshold")
    for p in thr:
      ax.annotate(f"{p['threshold']:g}", (p["avg_depth"], 100 * p["accuracy"]), fontsize=7,
                  xytext=(3, -9), textcoords="offset points")
  for i, p in enumerate(q for q in policies if q.get("threshold") is None):
    ax.plot(p["avg_depth"], 100 * p["accuracy"], "s", ms=8, color=f"C{i + 1}", label=p["policy"])
  ax.set_xlabel("average exit depth (Transformer layers run per example)")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title("Early-exit inference: accuracy vs compute")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return _save(fig, path)


def make_plots(workdir: str | Path, tiers: Sequence[Mapping[str, Any]] | None = None,
               policies: Sequence[Mapping[str, Any]] | None = None,
               chance: Mapping[str, float | None] | float | None = None,
               keys: Sequence[str] = ("error",)) -> list[Path]:
  """Writes WORKDIR/plots/{<key>_per_exit,tier_costs,accuracy_vs_depth}.png from what is given:
  one curve plot per metric of `keys` ("error", "wer", "eer", ...); `chance` per key (or one
  value for "error")."""
  out = Path(workdir) / "plots"
  made = []
  rows = metrics_lib.read_metrics(workdir)
  chance = chance if isinstance(chance, Mapping) else {"error": chance}
  for key in keys:
    if any(isinstance(r.get(key), Mapping) for r in rows):
      made.append(plot_error_curves(rows, out / f"{key}_per_exit.png", key=key,
                                    chance=chance.get(key)))
  if tiers:
    made.append(plot_tier_costs(tiers, out / "tier_costs.png"))
  if policies:
    made.append(plot_accuracy_vs_depth(policies, out / "accuracy_vs_depth.png"))
  return made
