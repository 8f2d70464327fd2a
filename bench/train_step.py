"""Train-step speed of a small and a B-sized MaskGIL on this machine, against its matmul peak.

  python bench/train_step.py [--sizes tiny,B] [--batch-size 8] [--steps 3] [--dtype float32]
      [--matmul 2048]

For each size: the real train step (the trainer's own task, optimizer and shardings, on
random codes so no data or tokenizer is needed), compiled ahead of time, then timed over
--steps steps after a warm-up. Prints step time, tokens/s and images/s, the analytic model
TFLOP/s (training/flops.py) and that as a fraction of the FLOP/s of one large square matmul in
the same dtype measured in the same run (an honest "MFU" for machines absent from the peak
table, CPUs included). Sizes: 'tiny' (configs/tiny.py) or B, L, XL, XXL (configs/maskgil_*.py).
"""
from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maskgil_jax import configlib
from maskgil_jax.configlib import recipes
from maskgil_jax.models.transformer import Transformer, num_params
from maskgil_jax.parallel import mesh as mesh_lib
from maskgil_jax.parallel import rules as rules_lib
from maskgil_jax.training.tasks import generator_task
from maskgil_jax.training import flops as flops_lib
from maskgil_jax.training import remat_choice
from maskgil_jax.training import state as state_lib


def parse_args(argv=None):
  p = argparse.ArgumentParser(prog="python bench/train_step.py",
                              description="Train-step time and FLOP/s against a matmul.")
  p.add_argument("--sizes", default="tiny,B", help="comma-separated: tiny, B, L, XL, XXL")
  p.add_argument("--batch-size", type=int, default=8, help="global batch per step")
  p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up)")
  p.add_argument("--dtype", default=None,
                 help="compute dtype (default bfloat16 on accelerators, float32 on CPU)")
  p.add_argument("--matmul", type=int, default=None,
                 help="side of the reference matmul (default 8192, 2048 on CPU)")
  return p.parse_args(argv)


def matmul_flops_per_s(n: int, dtype, repeats: int = 5) -> float:
  """Best FLOP/s of an n x n x n matmul on one device (the machine's practical peak)."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  mm = jax.jit(lambda a, b: a @ b).lower(a, b).compile()
  jax.block_until_ready(mm(a, b))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(mm(a, b))
    best = min(best, time.perf_counter() - start)
  return 2.0 * n ** 3 / best


def bench_config(size: str, batch_size: int, dtype: str):
  c = configlib.load_config("tiny") if size == "tiny" else recipes.maskgil(size)
  c.data.name = "codes"  # random codes below: no data pipeline, no tokenizer
  c.batch_size = batch_size
  c.model.dtype = dtype
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
  return configlib.finalize(c)


def time_train_step(config, steps: int) -> dict:
  """Compile the trainer's step for `config` (remat_policy 'auto' resolved as the trainer
  does) and time `steps` steps after a warm-up."""
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = rules_lib.make_rules(config.mesh.rules.to_dict())
  with jax.set_mesh(mesh), rules_lib.axis_rules(rules):
    batch_sharding = mesh_lib.batch_sharding(mesh)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    key = jax.device_put(jax.random.key(0), replicated)
    built = {}

    def compile_with(policy):
      c = config.copy_and_resolve_references()
      c.model.remat_policy = policy or c.model.remat_policy
      task = generator_task(c, tokenizer=None)
      abstract, shardings = state_lib.abstract_sharded(task.init, mesh, rules)
      step = jax.jit(task.step, in_shardings=(shardings, batch_sharding, replicated, None),
                     out_shardings=(shardings, replicated), donate_argnums=0)
      batch_abstract = {k: jax.ShapeDtypeStruct(s, d, sharding=batch_sharding)
                        for k, (s, d) in task.batch.items()}
      built[policy] = (task, shardings, step.lower(abstract, batch_abstract, key, None).compile())
      return built[policy][2]

    start = time.perf_counter()
    if config.model.remat_policy == "auto":
      policy = remat_choice.choose(compile_with, remat_choice.device_memory_bytes()).policy
    else:
      compile_with(None)
      policy = None
    compile_s = time.perf_counter() - start
    task, shardings, compiled = built[policy]
    state = state_lib.create_sharded(task.init, shardings)
    rng = np.random.default_rng(0)
    g = config.model.grid_size
    batch = mesh_lib.global_batch({
        "codes": rng.integers(0, config.model.codebook_size, (config.batch_size, g, g), np.int32),
        "label": rng.integers(0, config.model.num_classes, (config.batch_size,), np.int32)}, mesh)
    state, metrics = compiled(state, batch, key, None)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, batch, key, None)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - start) / steps
  return {"compile_s": compile_s, "step_s": step_s, "tokens": task.tokens_per_example,
          "flops": task.flops_per_step, "devices": mesh.size,
          "remat": policy or config.model.remat_policy}


def main(argv=None) -> int:
  args = parse_args(argv)
  on_cpu = jax.default_backend() == "cpu"
  dtype = args.dtype or ("float32" if on_cpu else "bfloat16")
  n = args.matmul or (2048 if on_cpu else 8192)
  peak = matmul_flops_per_s(n, jnp.dtype(dtype))
  print(f"{jax.device_count()} x {flops_lib.device_kind()}, {dtype}: {n}^3 matmul "
        f"{peak / 1e12:.3f} TFLOP/s per device")
  print(f"{'size':<6}{'params':>9}{'batch':>7}{'compile s':>11}{'step s':>10}{'tokens/s':>11}"
        f"{'images/s':>10}{'TFLOP/s/dev':>13}{'of matmul':>11}  remat")
  rows = []
  for size in args.sizes.split(","):
    config = bench_config(size.strip(), args.batch_size, dtype)
    r = time_train_step(config, args.steps)
    achieved = r["flops"] / r["step_s"] / r["devices"]
    rows.append((size, achieved / peak))
    n_params = num_params(nnx.eval_shape(lambda: Transformer(config.model, rngs=nnx.Rngs(0))))
    print(f"{size:<6}{n_params / 1e6:>8.1f}M{config.batch_size:>7}{r['compile_s']:>11.1f}"
          f"{r['step_s']:>10.3f}{config.batch_size * r['tokens'] / r['step_s']:>11.0f}"
          f"{config.batch_size / r['step_s']:>10.1f}{achieved / 1e12:>13.4f}"
          f"{achieved / peak:>10.1%}  {r['remat']}")
  print("train_step: " + ", ".join(f"{s} at {f:.1%} of the matmul's FLOP/s" for s, f in rows))
  return 0


if __name__ == "__main__":
  sys.exit(main())
