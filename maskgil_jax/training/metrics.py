"""What a run reports: TensorBoard event files, `WORKDIR/metrics.jsonl`, a terminal line per
log step, and sample grids.

Process 0 writes the event files (tensorboardX: no TensorFlow needed), `metrics.jsonl` (one
JSON object per logged step: `{"step": 100, "train/loss": ..., "perf/mfu": ...}`) and prints
one line per log step; every process writes its log file. Logged training metrics are means
over the steps since the previous log step (`IntervalMeans`, summed on the device, so the loop
never waits for them), except the instantaneous ones in `INSTANT` (the learning rate of the
logged step). Throughput is measured between two logged steps (whose metrics are fetched
anyway, so timing adds no host sync), never over the compilation of the first step.
"""
from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
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
  """Sums each step's metrics on the device (no host sync) and gives their means over the
  steps since the last `take` (`INSTANT` metrics: the latest value; `nonfinite`: any)."""

  def __init__(self):
    self.total, self.count, self.last = None, 0, None

  def add(self, metrics: dict) -> None:
    floats = {k: v for k, v in metrics.items() if k != "nonfinite"}
    self.total = floats if self.total is None else jax.tree.map(jnp.add, self.total, floats)
    self.count += 1
    self.last = metrics

  def take(self) -> dict:
    """Host values {name: mean} of the interval, then start a new interval."""
    total, last = jax.device_get((self.total, self.last))
    out = {k: (float(last[k]) if k in INSTANT else float(v) / self.count)
           for k, v in total.items()}
    self.total, self.count, self.last = None, 0, None
    return out


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
