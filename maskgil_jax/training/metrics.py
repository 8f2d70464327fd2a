"""What a run reports: TensorBoard + log lines (clu), `WORKDIR/metrics.jsonl`, progress, PNGs.

Process 0 writes TensorBoard event files, `metrics.jsonl` (one JSON object per logged step:
`{"step": 100, "train/loss": ..., "perf/mfu": ...}`) and sample grids; every process logs its
lines. Throughput is measured between two logged steps (whose metrics are fetched anyway, so
timing adds no host sync), never over the compilation of the first step.
"""
from __future__ import annotations

import json
import time

import jax
import numpy as np
from etils import epath


class JsonLines:
  """Appends one JSON object per line. Object stores (gs://...) cannot append, so there the
  file is rewritten whole (from memory) at each write."""

  def __init__(self, path: epath.Path):
    self.path = path
    self.rewrite = "://" in str(path)
    self.lines = path.read_text().splitlines(keepends=True) if self.rewrite and path.exists() else []

  def write(self, record: dict) -> None:
    line = json.dumps(record, sort_keys=True) + "\n"
    if not self.rewrite:
      with self.path.open("a") as f:
        f.write(line)
      return
    self.lines.append(line)
    tmp = self.path.parent / (self.path.name + ".tmp")
    tmp.write_text("".join(self.lines))
    tmp.replace(self.path)


def read_jsonl(path) -> list[dict]:
  return [json.loads(l) for l in epath.Path(path).read_text().splitlines() if l.strip()]


class MetricsLogger:
  """clu writers + metrics.jsonl + ReportProgress (steps/s, ETA) for one run."""

  def __init__(self, workdir: epath.Path, total_steps: int, every_steps: int):
    from clu import metric_writers, periodic_actions  # TensorFlow: only once a run starts
    self.primary = jax.process_index() == 0
    self.writer = metric_writers.create_default_writer(
        str(workdir), just_logging=not self.primary, asynchronous=True)
    self.jsonl = JsonLines(workdir / "metrics.jsonl") if self.primary else None
    self.progress = periodic_actions.ReportProgress(
        num_train_steps=total_steps, writer=self.writer, every_steps=every_steps)

  def scalars(self, step: int, values: dict) -> None:
    values = {k: float(v) for k, v in values.items()}
    self.writer.write_scalars(step, values)
    if self.jsonl is not None:
      self.jsonl.write({"step": step, **values})

  def images(self, step: int, name: str, images: np.ndarray) -> None:
    self.writer.write_images(step, {name: images})

  def close(self) -> None:
    self.writer.flush()
    self.writer.close()


def train_scalars(metrics: dict) -> dict:
  """Step metrics (device scalars, already fetched) under `train/` (the guard flag dropped)."""
  return {f"train/{k}": float(v) for k, v in metrics.items() if k != "nonfinite"}


class Throughput:
  """Step time, examples/s, tokens/s, TFLOP/s per device and MFU between logged steps."""

  def __init__(self, *, batch_size: int, tokens_per_example: int, num_devices: int,
               flops_per_step: float | None, peak_tflops: float | None):
    self.batch_size, self.tokens = batch_size, tokens_per_example
    self.flops_per_device = flops_per_step / num_devices if flops_per_step else None
    self.peak = peak_tflops
    self.start_step = self.start_time = None

  def mark(self, step: int) -> None:
    """Start timing at `step` (its results are on the host)."""
    self.start_step, self.start_time = step, time.perf_counter()

  def measure(self, step: int) -> dict:
    """Rates since the last mark (empty before one), then mark `step`."""
    out = {}
    if self.start_step is not None and step > self.start_step:
      dt = (time.perf_counter() - self.start_time) / (step - self.start_step)
      out = {"perf/step_time_s": dt, "perf/images_per_s": self.batch_size / dt,
             "perf/tokens_per_s": self.batch_size * self.tokens / dt}
      if self.flops_per_device:
        tflops = self.flops_per_device / dt / 1e12
        out["perf/tflops_per_device"] = tflops
        if self.peak:
          out["perf/mfu"] = tflops / self.peak
    self.mark(step)
    return out
