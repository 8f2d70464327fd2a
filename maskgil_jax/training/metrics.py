"""What a run reports: TensorBoard event files, `WORKDIR/metrics.jsonl`, a terminal line per
log step, and sample grids.

Process 0 writes the event files (tensorboardX: no TensorFlow needed), `metrics.jsonl` (one
JSON object per logged step: `{"step": 100, "train/loss": ..., "perf/mfu": ...}`) and prints
one line per log step; every process writes its log file. Logged training metrics are means
over the steps since the previous log step (`IntervalMeans`: `clu.metrics` averages summed on
the device, so the loop never waits for them), except the instantaneous ones in `INSTANT` (the
learning rate of the logged step). The writers and the progress line stay ours: clu's writer
and periodic-action modules import TensorFlow (docs/training.md). Throughput is measured between two logged steps (whose metrics are fetched
anyway, so timing adds no host sync), never over the compilation of the first step.
"""
from __future__ import annotations

import functools
import json
import sys
import time

import jax
import numpy as np
from etils import epath

INSTANT = ("lr",)  # logged as the value at the log step, not the interval's mean


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
  """TensorBoard + metrics.jsonl + the terminal line, for one run (quiet on other processes)."""

  def __init__(self, workdir: epath.Path, total_steps: int, every_steps: int):
    self.primary = jax.process_index() == 0
    self.total_steps = total_steps
    self.writer = None
    if self.primary:
      from tensorboardX import SummaryWriter  # pure Python event files
      self.writer = SummaryWriter(str(workdir), flush_secs=30)
    self.jsonl = JsonLines(workdir / "metrics.jsonl") if self.primary else None
    self.started = None  # (step, time) of the first timed step, for the ETA

  def progress(self, step: int) -> None:
    if self.started is None:
      self.started = (step, time.perf_counter())

  def scalars(self, step: int, values: dict) -> None:
    values = {k: float(v) for k, v in values.items()}
    if not self.primary:
      return
    for k, v in values.items():
      self.writer.add_scalar(k, v, step)
    self.jsonl.write({"step": step, **values})
    print(self.terminal_line(step, values), file=sys.stderr, flush=True)

  def terminal_line(self, step: int, values: dict) -> str:
    """`step 100/800  loss 5.1234  acc 0.123  lr 1.0e-04  gnorm 0.52  1,234 tok/s  MFU 1.2%
    ETA 3m12s`: what a person watching the run needs, in one line."""
    width = len(str(self.total_steps))
    parts = [f"step {step:>{width}}/{self.total_steps}"]
    named = [("train/loss", "loss", "{:.4f}"), ("train/mar_loss", "mar", "{:.4f}"),
             ("train/ar_loss", "ar", "{:.4f}"), ("train/accuracy", "acc", "{:.3f}"),
             ("train/lr", "lr", "{:.1e}"), ("train/grad_norm", "gnorm", "{:.3g}")]
    parts += [f"{label} {fmt.format(values[k])}" for k, label, fmt in named if k in values]
    if "perf/tokens_per_s" in values:
      parts.append(f"{values['perf/tokens_per_s']:,.0f} tok/s")
    if "perf/mfu" in values:
      parts.append(f"MFU {100 * values['perf/mfu']:.1f}%")
    eta = self.eta(step)
    if eta is not None:
      parts.append(f"ETA {eta}")
    return "  ".join(parts)

  def eta(self, step: int) -> str | None:
    if self.started is None or step <= self.started[0]:
      return None
    per_step = (time.perf_counter() - self.started[1]) / (step - self.started[0])
    left = int(per_step * (self.total_steps - step))
    h, rem = divmod(left, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"

  def images(self, step: int, name: str, images: np.ndarray) -> None:
    """uint8 [N, H, W, 3] images into TensorBoard."""
    if self.primary:
      self.writer.add_images(name, np.asarray(images), step, dataformats="NHWC")

  def close(self) -> None:
    if self.writer is not None:
      self.writer.flush()
      self.writer.close()


class IntervalMeans:
  """Each step's metrics merged on the device into a `clu.metrics.Collection` (`Average` per
  metric; `LastValue` for the `INSTANT` ones; the `nonfinite` flag is the trainer's, not a
  mean) by one compiled call, so the loop never waits for them; `take` fetches the interval
  and starts the next. The sums are float32 on the device, as the step gives them; the means
  are divided on the host, in float64."""

  def __init__(self):
    self.collection = None

  def add(self, metrics: dict) -> None:
    floats = {k: v for k, v in metrics.items() if k != "nonfinite"}
    if self.collection is None:
      self.collection = _collection_type(tuple(sorted(floats))).empty()
    self.collection = _merge_step(self.collection, floats)

  def take(self) -> dict:
    """Host values {name: mean} of the interval, then start a new interval."""
    host = jax.device_get(self.collection)  # numpy: compute() divides on the host
    self.collection = None
    return {k: float(v) for k, v in host.compute().items()}


@functools.cache
def _collection_type(names: tuple[str, ...]) -> type:
  from clu import metrics as clu_metrics
  return clu_metrics.Collection.create(**{
      k: (clu_metrics.LastValue if k in INSTANT else clu_metrics.Average).from_output(k)
      for k in names})


@jax.jit
def _merge_step(collection, metrics: dict):
  return collection.merge(type(collection).single_from_model_output(**metrics))


def train_scalars(metrics: dict) -> dict:
  """Host metrics under `train/` (the guard flag dropped)."""
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
