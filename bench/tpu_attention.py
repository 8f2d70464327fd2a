"""Splash attention (padded to 128 slots where needed) against XLA attention on a TPU chip, by
XLA's TPU cost model, for the attention of every shipped generator config.

  python bench/tpu_attention.py [--slice v5litepod-1] [--chips 8]

For each config: one layer's attention (forward and backward, as in training) at the config's
shapes (heads, head dim, sequence, mask; batch = the config's global batch / --chips, as on a
slice of that many chips), compiled ahead of time for one chip of --slice with each kernel.
Prints XLA's cost-model time of each and which is faster. These are ESTIMATES of the cost
model, not measurements; the figures behind `attention_kernels.SPLASH_AUTO_MAX_PADDING`.
"""
from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

from maskgil_jax import configlib
from maskgil_jax.models import attention_kernels as ak
from maskgil_jax.models import masks
from maskgil_jax.models.attention import attend
from maskgil_jax.models.layouts import Layout
from maskgil_jax.parallel import topology
from maskgil_jax.training import compile_report, flops

CONFIGS = ("maskgil_b", "maskgil_l", "maskgil_xl", "maskgil_1b", "maskgil_t2i_xl:256",
           "maskgil_t2i_xl:512", "llamagen_b", "llamagen_l", "llamagen_xl", "llamagen_xxl",
           "llamagen_t2i_xl")


def attention_shapes(config, chips: int) -> dict:
  m = config.model
  t = flops.sequence_length(m, config.objective.name)
  return {"b": max(config.batch_size // chips, 1), "t": t, "hq": m.n_head, "hkv": m.n_kv_head,
          "d": m.dim // m.n_head, "mode": "causal" if config.objective.name == "ar"
          else "bidirectional", "masked": m.get("condition", "class") == "caption",
          "prefix": Layout.from_config(m).prefix_len}


def cost_seconds(kernel: ak.Kernel, s: dict, device, backward: bool) -> tuple[float, bool]:
  """(cost-model seconds, whether recovered) of one attention call (forward, and backward
  with `backward`) on `device`. Where the cost model could not time some ops it answers a
  negative time (`compile_report.timed_part`); its timed part is used and marked."""
  mesh = jax.sharding.Mesh(np.array([device]), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  q = jax.ShapeDtypeStruct((s["b"], s["t"], s["hq"], s["d"]), jnp.bfloat16, sharding=sharding)
  kv = jax.ShapeDtypeStruct((s["b"], s["t"], s["hkv"], s["d"]), jnp.bfloat16, sharding=sharding)
  km = jax.ShapeDtypeStruct((s["b"], s["t"]), jnp.bool_, sharding=sharding)

  def loss(q, k, v, key_mask):
    mask = masks.AttentionMask.create(s["mode"], s["t"],
                                      key_mask=key_mask if s["masked"] else None)
    return jnp.sum(attend(q, k, v, mask, kernel).astype(jnp.float32))

  with jax.set_mesh(mesh):
    fn = jax.grad(loss, (0, 1, 2)) if backward else loss
    compiled = jax.jit(fn).lower(q, kv, kv, km).compile()
  raw = compile_report.cost_analysis(compiled)["optimal_seconds"]
  return (raw, False) if raw > 0 else (compile_report.timed_part(raw)[0], True)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python bench/tpu_attention.py", description=__doc__)
  p.add_argument("--slice", default="v5litepod-1", help="the chip kind, as a slice name")
  p.add_argument("--chips", type=int, default=8, help="the global batch is split over these")
  p.add_argument("--configs", default=",".join(CONFIGS))
  args = p.parse_args(argv)
  device = topology.parse(args.slice).devices()[0]
  print(f"one layer's attention, forward + backward, on one {device.device_kind} "
        f"(batch / {args.chips}); XLA cost-model ESTIMATES")
  print("| config | batch per chip | slots (padded) | heads x dim | mask | pass | XLA (ms) | "
        "splash (ms) | faster |")
  print("|---|---|---|---|---|---|---|---|---|")
  for name in args.configs.split(","):
    config = configlib.finalize(configlib.load_config(name, []))
    s = attention_shapes(config, args.chips)
    for backward in (False, True):
      t_xla, r_xla = cost_seconds(ak.XLA, s, device, backward)
      t_splash, r_splash = cost_seconds(ak.Kernel("pallas"), s, device, backward)
      faster = "splash" if t_splash < t_xla else "XLA"
      mark = lambda r: "*" if r else ""
      print(f"| {name} | {s['b']} | {s['t']} ({ak.splash_length(s['t'])}) | {s['hq']} x "
            f"{s['d']} | {s['mode']}{' + captions' if s['masked'] else ''} | "
            f"{'fwd + bwd' if backward else 'fwd'} | {1e3 * t_xla:.2f}{mark(r_xla)} | "
            f"{1e3 * t_splash:.2f}{mark(r_splash)} | {faster} ({t_xla / t_splash:.2f}x) |",
            flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
