"""Our JAX code against its PyTorch twin, side by side on this machine, same work, same weights.

  python bench/versus_torch.py [--workloads train,mar,ar1,ar4,vq] [--sizes B[,L,...]]
      [--rounds 2] [--threads N]

Workloads (fp32; the generator is built at each --sizes size with random weights, and the
PyTorch twin `interop/torch_model.py` loads the same weights through the export name table):
- `train`: the MaskGIL train step (maskgil_reference layout, batch 8 x 257 slots, AdamW and
  clipping, no dropout since the twin has none; the trainer's own step on our side, its remat
  policy chosen as the trainer does and its state donated as the trainer does, and
  bench/torch_side.py's on the other);
- `mar`: MaskGIL sampling, 4 images, 8 steps, guidance (8 rows per forward);
- `ar1` / `ar4`: LlamaGen AR sampling, 256 tokens, 1 / 4 classes with guidance (2 / 8 rows);
- `vq`: VQ-16 encode + decode of 4 images of 256 px (the size does not apply), through
  `models.vq.reconstruct` as users call it (on CPU with `maskgil_jax.xla_cpu`'s options).

Each side is compiled or warmed up once (our compile time is reported apart), then the two sides
run alternately, `--rounds` times each, so load from other work on the machine hits both
alike; the medians and their ratio (PyTorch / ours: above 1 means we are faster) are printed.
Run one benchmark at a time: a B model in fp32 needs a few GB per side.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# PyTorch's OpenMP threads sleep instead of spinning while they wait: on a machine shared with
# other work a spinning thread burns the core its partner needs (set the variable to ACTIVE to
# measure the spinning default)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from maskgil_jax import configlib
from maskgil_jax.configlib import recipes
from maskgil_jax.decode import DecodeSettings, generate_tokens
from maskgil_jax.interop import gpt_names, names, vq_names
from maskgil_jax.interop import torch_model as tm
from maskgil_jax.models import vq as jax_vq
from maskgil_jax.models.transformer import Transformer
from maskgil_jax.parallel import mesh as mesh_lib
from maskgil_jax.parallel import rules as rules_lib
from maskgil_jax.training.tasks import generator_task
from maskgil_jax.training import remat_choice

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_side  # noqa: E402  (bench/ is not a package)

WORKLOADS = ("train", "mar", "ar1", "ar4", "vq")


def parse_args(argv=None):
  p = argparse.ArgumentParser(prog="python bench/versus_torch.py",
                              description="JAX against the PyTorch twin, side by side.")
  p.add_argument("--workloads", default=",".join(WORKLOADS),
                 help=f"comma-separated, of {', '.join(WORKLOADS)}")
  p.add_argument("--sizes", default="B", help="generator sizes, comma-separated: B, L, XL, XXL")
  p.add_argument("--rounds", type=int, default=2, help="timed runs per side (medians kept)")
  p.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch threads")
  args = p.parse_args(argv)
  unknown = set(args.workloads.split(",")) - set(WORKLOADS)
  if unknown:
    p.error(f"unknown workloads {sorted(unknown)}; of {WORKLOADS}")
  return args


def generator_config(size: str, layout: str, batch_size: int = 8):
  """fp32 generator config on one device: the MaskGIL recipe for MAR, LlamaGen's for AR."""
  c = recipes.maskgil(size) if layout == "maskgil_reference" else recipes.llamagen(size)
  c.model = configlib.model_config(size, layout).copy_and_resolve_references()
  c.model.dtype = "float32"
  # the twin has no dropout layers: neither side drops (same work)
  c.model.token_dropout = c.model.resid_dropout = c.model.ffn_dropout = 0.0
  c.data.name = "codes"
  c.batch_size = batch_size
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
  return configlib.finalize(c)


def random_transformer(config) -> Transformer:
  """A generator with random weights everywhere (the output head too, so sampling is not
  drawing from uniform logits)."""
  model = Transformer(config.model, rngs=nnx.Rngs(config.seed))
  w = model.output.weight
  w.set_value(0.02 * jax.random.normal(jax.random.key(1), w.shape, w.dtype))
  return model


def torch_twin(model: Transformer, config) -> tm.Transformer:
  sd = names.export_state_dict(model, gpt_names.gpt_rules(config.model))
  twin = tm.Transformer(config.model.to_dict())
  twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
  return twin


def compiled(fn, *args, jitted=None):
  """(compiled fn, seconds to lower and compile); `jitted` (a jitted function: its own options
  and donation) is compiled instead of `jax.jit(fn)`."""
  start = time.perf_counter()
  out = (jitted or jax.jit(fn)).lower(*args).compile()
  return out, time.perf_counter() - start


# ---- workloads: each returns (our run, twin run, our compile seconds) -------------------------
def train_workload(size: str):
  """The trainer's step, its remat policy chosen as the trainer does ('auto')."""
  config = generator_config(size, "maskgil_reference")
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = rules_lib.make_rules(config.mesh.rules.to_dict())
  rng = np.random.default_rng(0)
  codes = rng.integers(0, config.model.codebook_size, (config.batch_size, 16, 16), np.int32)
  labels = rng.integers(0, config.model.num_classes, (config.batch_size,), np.int32)
  batch = {"codes": jnp.asarray(codes), "label": jnp.asarray(labels)}
  key = jax.random.key(0)
  built = {}

  def compile_with(policy):
    c = config.copy_and_resolve_references()
    c.model.remat_policy = policy
    task = generator_task(c, tokenizer=None)
    state = jax.eval_shape(task.init)
    # the state donated, as the trainer's step does: updated in place, not copied
    step, compile_s = compiled(None, state, batch, key, jitted=jax.jit(
        lambda s, b, k: task.step(s, b, k, None), donate_argnums=0))
    built[policy] = (task, step, compile_s)
    return step

  with jax.set_mesh(mesh), rules_lib.axis_rules(rules):
    choice = remat_choice.choose(compile_with, remat_choice.device_memory_bytes())
    task, step, _ = built[choice.policy]
    compile_s = sum(c for _, _, c in built.values())
    state = task.init()
  print(f"  train: {remat_choice.describe(choice)}", flush=True)
  twin = torch_twin(state.params, config)
  twin_step = torch_side.make_train_step(twin)
  t_codes = torch.from_numpy(codes.reshape(len(codes), -1)).long()
  t_labels = torch.from_numpy(labels).long()
  holder = {"state": state}

  def ours():
    holder["state"], metrics = step(holder["state"], batch, key)
    return metrics

  return ours, lambda: twin_step(t_codes, t_labels), compile_s


def mar_workload(size: str):
  config = generator_config(size, "maskgil_reference")
  model = random_transformer(config)
  labels = jnp.arange(4, dtype=jnp.int32)
  settings = DecodeSettings.create(cfg_scale=3.0, steps=8, schedule="arccos")
  key = jax.random.key(0)
  run, compile_s = compiled(lambda m, l, k, s: generate_tokens(m, l, k, s, "mar"),
                            model, labels, key, settings)
  twin = torch_twin(model, config)
  t_labels = torch.arange(4)
  return (lambda: run(model, labels, key, settings),
          lambda: torch_side.mar_sample(twin, t_labels, steps=8, cfg_scale=3.0), compile_s)


def ar_workload(size: str, classes: int):
  config = generator_config(size, "llamagen")
  model = random_transformer(config)
  labels = jnp.arange(classes, dtype=jnp.int32)
  settings = DecodeSettings.create(cfg_scale=1.0, cfg_schedule="constant")
  key = jax.random.key(0)
  run, compile_s = compiled(lambda m, l, k, s: generate_tokens(m, l, k, s, "ar"),
                            model, labels, key, settings)
  twin = torch_twin(model, config)
  t_labels = torch.arange(classes)
  return (lambda: run(model, labels, key, settings),
          lambda: torch_side.ar_sample(twin, t_labels, cfg_scale=1.0), compile_s)


def vq_workload(_size: str):
  config = configlib.finalize(configlib.base_config("B", "maskgil", tokenizer="vq16"))
  vq = jax_vq.VQModel(config.tokenizer, rngs=nnx.Rngs(0))
  images = jax.random.uniform(jax.random.key(0), (4, 256, 256, 3), jnp.float32, -1.0, 1.0)
  # the tokenizer's own jitted entry point, with the compiler options it has on CPU
  run, compile_s = compiled(None, vq, images, jitted=jax_vq.reconstruct)
  twin = tm.VQModel(config.tokenizer.to_dict())
  sd = vq_names.export_vq_state_dict(vq)
  twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
  t_images = torch.from_numpy(np.asarray(images).transpose(0, 3, 1, 2).copy())
  return (lambda: run(vq, images), lambda: torch_side.vq_roundtrip(twin, t_images), compile_s)


BUILDERS = {
    "train": (train_workload, "MAR train step, batch 8 x 257, AdamW + clip"),
    "mar": (mar_workload, "MaskGIL sample, 4 images, 8 steps, guidance"),
    "ar1": (lambda s: ar_workload(s, 1), "LlamaGen AR, 256 tokens, 1 class, guidance"),
    "ar4": (lambda s: ar_workload(s, 4), "LlamaGen AR, 256 tokens, 4 classes, guidance"),
    "vq": (vq_workload, "VQ-16 encode + decode, 4 images 256 px"),
}


def alternate(ours, theirs, rounds: int) -> tuple[float, float]:
  """Median seconds of each side over `rounds` alternating runs, after one warm-up each; the
  side that goes first swaps every round."""
  jax.block_until_ready(ours())
  theirs()
  times = {"ours": [], "theirs": []}
  for r in range(rounds):
    order = (("ours", ours), ("theirs", theirs))
    for name, fn in (order if r % 2 == 0 else order[::-1]):
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
  return statistics.median(times["ours"]), statistics.median(times["theirs"])


def matmul_gflops(n: int = 2048) -> tuple[float, float]:
  """fp32 GFLOP/s of one n^3 matmul on each side (best of 3), the machine's practical peak."""
  a = np.random.default_rng(0).standard_normal((n, n), np.float32)
  ja, ta = jnp.asarray(a), torch.from_numpy(a)
  mm = jax.jit(lambda x: x @ x).lower(ja).compile()
  best = {"jax": float("inf"), "torch": float("inf")}
  for side, fn in (("jax", lambda: mm(ja)), ("torch", lambda: ta @ ta)) * 4:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    best[side] = min(best[side], time.perf_counter() - start)
  return 2 * n ** 3 / best["jax"] / 1e9, 2 * n ** 3 / best["torch"] / 1e9


def main(argv=None) -> int:
  args = parse_args(argv)
  torch.set_num_threads(args.threads)
  print(f"{jax.default_backend()} ({os.cpu_count()} cores), fp32, PyTorch {torch.__version__} "
        f"with {torch.get_num_threads()} threads, jax {jax.__version__}, {args.rounds} rounds")
  ours_mm, theirs_mm = matmul_gflops()
  print(f"2048^3 matmul: ours {ours_mm:.0f} GFLOP/s, PyTorch {theirs_mm:.0f} GFLOP/s")
  print(f"{'workload':<48}{'size':>5}{'PyTorch s':>11}{'ours s':>9}{'ratio':>8}"
        f"{'compile s':>11}")
  ratios = []
  for size in args.sizes.split(","):
    for name in args.workloads.split(","):
      if name == "vq" and size != args.sizes.split(",")[0]:
        continue  # the tokenizer has one size
      build, label = BUILDERS[name]
      ours, theirs, compile_s = build(size)
      ours_s, theirs_s = alternate(ours, theirs, args.rounds)
      ratios.append((f"{name}-{size}", theirs_s / ours_s))
      print(f"{label:<48}{'-' if name == 'vq' else size:>5}{theirs_s:>11.2f}{ours_s:>9.2f}"
            f"{theirs_s / ours_s:>7.2f}x{compile_s:>11.1f}", flush=True)
      del ours, theirs
  print("versus_torch: " + ", ".join(f"{n} {r:.2f}x" for n, r in ratios))
  return 0


if __name__ == "__main__":
  sys.exit(main())
