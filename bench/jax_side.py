"""Our side of bench/versus_torch.py: each workload through the library as users call it.

`build(name, size)` returns (run, compile seconds, weights): `run()` does the workload once to
completion; `weights` is the state dict (reference key names, numpy) that the other sides load,
so every side computes with the same weights.
- `train`: the trainer's step (`generator_task`), its remat policy chosen as the trainer does
  ('auto') and its state donated as the trainer does;
- `mar`, `ar1`, `ar4`: `decode.generate_tokens`, random weights everywhere (the output head
  too, so sampling does not draw from uniform logits);
- `vq`: `models.vq.reconstruct`, the tokenizer's jitted entry point (on CPU with the compiler
  options of `maskgil_jax/xla_cpu.py`).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import workloads as wl
from maskgil_jax.decode import DecodeSettings, generate_tokens
from maskgil_jax.interop import gpt_names, names, vq_names
from maskgil_jax.models import vq as jax_vq
from maskgil_jax.models.transformer import Transformer


def random_transformer(config) -> Transformer:
  """A generator with random weights everywhere (the zero-initialised output head too)."""
  model = Transformer(config.model, rngs=nnx.Rngs(config.seed))
  w = model.output.weight
  w.set_value(0.02 * jax.random.normal(jax.random.key(1), w.shape, w.dtype))
  return model


def generator_weights(model, config) -> dict[str, np.ndarray]:
  return {k: np.asarray(v) for k, v in
          names.export_state_dict(model, gpt_names.gpt_rules(config.model)).items()}


def compiled(fn, *args, jitted=None):
  """(compiled fn, seconds to lower and compile); `jitted` (a jitted function with its own
  options and donation) is compiled instead of `jax.jit(fn)`."""
  start = time.perf_counter()
  out = (jitted or jax.jit(fn)).lower(*args).compile()
  return out, time.perf_counter() - start


def train_workload(config):
  from maskgil_jax.parallel import mesh as mesh_lib
  from maskgil_jax.parallel import rules as rules_lib
  from maskgil_jax.training.tasks import generator_task
  from maskgil_jax.training import remat_choice
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = rules_lib.make_rules(config.mesh.rules.to_dict())
  codes, labels = wl.train_batch(config)
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
  weights = generator_weights(state.params, config)
  holder = {"state": state}

  def run():
    holder["state"], metrics = step(holder["state"], batch, key)
    return metrics

  return run, compile_s, weights


def sample_workload(config, method: str, labels: int, settings: DecodeSettings):
  model = random_transformer(config)
  labels = jnp.arange(labels, dtype=jnp.int32)
  key = jax.random.key(0)
  run, compile_s = compiled(lambda m, l, k, s: generate_tokens(m, l, k, s, method),
                            model, labels, key, settings)
  return lambda: run(model, labels, key, settings), compile_s, generator_weights(model, config)


def vq_workload(tokenizer_config, side: int):
  vq = jax_vq.VQModel(tokenizer_config, rngs=nnx.Rngs(0))
  images = jnp.asarray(wl.vq_images(side))
  run, compile_s = compiled(None, vq, images, jitted=jax_vq.reconstruct)
  weights = {k: np.asarray(v) for k, v in vq_names.export_vq_state_dict(vq).items()}
  return lambda: run(vq, images), compile_s, weights


def build(name: str, size: str):
  """(run, compile seconds, weights) of workload `name` at generator size `size`."""
  if name == "vq":
    return vq_workload(*wl.vq_config(size))
  config = wl.workload_config(name, size)
  if name == "train":
    return train_workload(config)
  if name == "mar":
    settings = DecodeSettings.create(cfg_scale=wl.MAR_CFG, steps=wl.MAR_STEPS,
                                     schedule="arccos")
    return sample_workload(config, "mar", wl.MAR_IMAGES, settings)
  settings = DecodeSettings.create(cfg_scale=wl.AR_CFG, cfg_schedule="constant")
  return sample_workload(config, "ar", wl.ar_classes(name), settings)


def block(out):
  return jax.block_until_ready(out)
