"""Accelerator chips by device kind: their dense bf16 peak, the one table the trainer's MFU, the
compile report and the TPU slice names (parallel/topology.py) all read."""
from __future__ import annotations

PEAK_TFLOPS = {
    "tpu v2": 22.5,
    "tpu v3": 61.5,
    "tpu v4 lite": 137.5,
    "tpu v4": 275.0,
    "tpu v5 lite": 197.0,
    "tpu v5e": 197.0,
    "tpu v5p": 459.0,
    "tpu v5": 459.0,
    "tpu v6 lite": 918.0,
    "tpu v6e": 918.0,
    "tpu7x": 2307.0,
    "h100 pcie": 756.0,
    "h100": 989.0,
    "h200": 989.0,
    "gh200": 989.0,
    "b200": 2250.0,
    "a100": 312.0,
    "l4": 121.0,
}


def peak_tflops(device_kind: str, override: float = 0.0) -> float | None:
  """Per-device peak (`override` when > 0), None for a device not in the table (e.g. CPU)."""
  if override > 0:
    return float(override)
  kind = device_kind.lower()
  for name in sorted(PEAK_TFLOPS, key=len, reverse=True):
    if name in kind:
      return PEAK_TFLOPS[name]
  return None
