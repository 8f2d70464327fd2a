"""Decoding speed, MAR vs hybrid vs AR, measured side by side on one model and one batch.

  python bench/sample_speed.py --config configs/maskgil.py:B [--ckpt CKPT] [--batch-size 64] \
      [--steps 8] [--ar-tokens N] [--cfg-scale W] [--repeats 3] [--config.a.b=value ...]

Prints, per decoder the model's layout supports (maskgil: all three; llamagen: AR;
maskgil_reference: MAR), the compile time (ahead of time, apart from the runs), the seconds per
batch (best of --repeats after a warm-up run) and images per second, with each one's speed-up
over AR; then the time of one MAR step against one full bidirectional forward pass of the same
(guidance-doubled) batch, which is the cost of sampling and ranking beyond the network. Weights
are random unless --ckpt is given (speed does not depend on them).
"""
from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

from maskgil_jax import configlib
from maskgil_jax.decode import DecodeSettings, generate_tokens
from maskgil_jax.decode.mar import guided_logits
from maskgil_jax.models.transformer import Transformer, num_params
from maskgil_jax.parallel.mesh import batch_sharding, batch_shards, make_mesh
from maskgil_jax.parallel.rules import axis_rules, make_rules
from maskgil_jax.loading import abstract_generator, load_generator


def parse_args(argv=None):
  p = argparse.ArgumentParser(prog="python bench/sample_speed.py",
                              description="MAR / hybrid / AR decoding speed side by side.")
  p.add_argument("--config", default="configs/maskgil.py:B", help="experiment file")
  p.add_argument("--ckpt", help="weights (our checkpoint or a PyTorch GPT); default random")
  p.add_argument("--batch-size", type=int, default=64, help="images per batch (global)")
  p.add_argument("--steps", type=int, help="MAR steps (default config.decode.steps)")
  p.add_argument("--ar-tokens", type=int, help="hybrid: AR tokens (default half the grid)")
  p.add_argument("--cfg-scale", type=float, help="guidance w (default config.decode.cfg_scale)")
  p.add_argument("--repeats", type=int, default=3, help="timed runs per decoder (best is kept)")
  args, rest = p.parse_known_args(argv)
  bad = [r for r in rest if not (r.startswith("--config.") and "=" in r)]
  if bad:
    p.error(f"unrecognized arguments {bad}")
  return args, [r[len("--config."):] for r in rest]


def timed(fn, repeats: int) -> float:
  """Best wall time of `repeats` runs of `fn` (after one warm-up), each run to completion."""
  jax.block_until_ready(fn())
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - start)
  return best


def compile_decoder(model, labels, key, settings, method):
  """(compiled decoder, compile seconds): lowering and compiling are timed apart from runs."""
  start = time.perf_counter()
  compiled = generate_tokens.lower(model, labels, key, settings, method).compile()
  return compiled, time.perf_counter() - start


def main(argv=None) -> int:
  args, overrides = parse_args(argv)
  config = configlib.finalize(configlib.load_config(args.config, overrides))
  length = config.model.grid_size ** 2
  d = config.decode
  settings = DecodeSettings.create(
      cfg_scale=d.cfg_scale if args.cfg_scale is None else args.cfg_scale,
      temperature=d.temperature, choice_temperature=d.choice_temperature, top_k=d.top_k,
      top_p=d.top_p, steps=args.steps or d.steps, schedule=d.schedule,
      cfg_schedule=d.cfg_schedule,
      ar_tokens=length // 2 if args.ar_tokens is None else args.ar_tokens)
  mesh = make_mesh(config.mesh)
  rules = make_rules(config.mesh.get("rules"))
  batch = -(-args.batch_size // batch_shards(mesh)) * batch_shards(mesh)
  if args.ckpt:
    model = load_generator(args.ckpt, config.model, mesh=mesh, rules=rules)
  else:
    shardings = jax.tree.map(lambda a: a.sharding, abstract_generator(config.model, mesh, rules))
    model = jax.jit(lambda: Transformer(config.model, rngs=nnx.Rngs(0)),
                    out_shardings=shardings)()
  layout = model.layout
  methods = ([("mar", f"mar ({settings.steps} steps)")] if layout.mask_id is not None else [])
  if layout.mask_id is not None and layout.prefix_len > 0:
    methods.append(("hybrid", f"hybrid ({settings.ar_tokens} AR + {settings.steps})"))
  if layout.prefix_len > 0:
    methods.append(("ar", f"ar ({length} steps)"))
  labels = jax.device_put(jax.random.randint(jax.random.PRNGKey(1), (batch,), 0,
                                             layout.num_classes), batch_sharding(mesh))
  key = jax.random.PRNGKey(0)
  devices = jax.devices()
  print(f"model: {config.model.layout} {config.model.size} ({num_params(model) / 1e6:.1f}M "
        f"params), {config.model.dtype}, batch {batch}, grid {layout.grid[0]}x"
        f"{layout.grid[1]}, w {float(settings.cfg_scale):g} (guided: {settings.guided}), "
        f"{len(devices)} x {devices[0].device_kind}")

  results = {}
  with jax.set_mesh(mesh), axis_rules(rules):
    for method, name in methods:
      compiled, compile_s = compile_decoder(model, labels, key, settings, method)
      batch_s = timed(lambda: compiled(model, labels, key, settings), args.repeats)
      results[method] = (name, compile_s, batch_s)
    if layout.mask_id is not None:
      tokens = jnp.full((batch, length), layout.mask_id, jnp.int32)
      step0 = jnp.int32(0)
      forward = jax.jit(guided_logits).lower(model, tokens, labels, settings, step0).compile()
      forward_s = timed(lambda: forward(model, tokens, labels, settings, step0), args.repeats)

  ar_s = results.get("ar", (None, None, None))[2]
  print(f"{'decoder':<26}{'compile s':>11}{'s / batch':>12}{'images / s':>12}{'vs AR':>9}")
  for name, compile_s, batch_s in results.values():
    ratio = f"{ar_s / batch_s:.1f}x" if ar_s else "-"
    print(f"{name:<26}{compile_s:>11.2f}{batch_s:>12.4f}{batch / batch_s:>12.1f}{ratio:>9}")
  if "mar" in results:
    step_s = results["mar"][2] / settings.steps
    print(f"MAR step {step_s * 1e3:.2f} ms vs one full forward {forward_s * 1e3:.2f} ms "
          f"({step_s / forward_s:.2f}x)")
  speedups = ", ".join(f"{m} {ar_s / r[2]:.1f}x" for m, r in results.items() if ar_s and m != "ar")
  best = max(results.values(), key=lambda r: batch / r[2])
  print(f"sample_speed: fastest {best[0]} at {batch / best[2]:.1f} images/s"
        + (f"; over AR: {speedups}" if speedups else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
