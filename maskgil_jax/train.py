"""The trainer: `python -m maskgil_jax.train --config configs/x.py[:arg] --workdir DIR`.

  --config.a.b=value   override any config field     --memory-report   compile, print memory, exit
  --profile FIRST[:N]  trace N steps for TensorBoard  --compilation-cache DIR   reuse compilations

Read top to bottom, like a recipe: mesh -> model, optimizer and train step for the task ->
shardings -> compiled step -> data -> restore or initialise -> loop (log, sample, checkpoint).
Tasks (`config.task`):
  generator  MaskGIL (objective 'mar'), LlamaGen (objective 'ar') or one model for both
             (objective 'joint') on codes, or on images that a frozen tokenizer
             (`tokenizer.ckpt`) encodes inside the step;
  tokenizer  the VQ tokenizer with its perceptual, adversarial and codebook losses and a
             PatchGAN discriminator with its own optimizer.
Restarting with the same --workdir continues exactly where the last checkpoint stopped
(parameters, optimizer, step, data position); SIGTERM (preemption) saves first.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from maskgil_jax import checkpoints, cli, configlib, data, decode
from maskgil_jax.configlib import ConfigError
from maskgil_jax.errors import UserError
from maskgil_jax.models import vq
from maskgil_jax.models.transformer import Transformer
from maskgil_jax.parallel import mesh as mesh_lib
from maskgil_jax.parallel import rules as rules_lib
from maskgil_jax.parallel import topology as topology_lib
from maskgil_jax.training import compile_report
from maskgil_jax.training import flops as flops_lib
from maskgil_jax.training import memory, metrics as metrics_lib, objectives, optim
from maskgil_jax.training import remat_choice
from maskgil_jax.training import state as state_lib, steps, tokenizer_losses
from maskgil_jax.text import encoder as text_encoder


class TrainingError(UserError):
  """Training cannot continue (non-finite loss, unusable workdir, mismatched data)."""


def check_config(config) -> None:
  """The fields only the trainer reads; ConfigError names the first bad one."""
  optim.check_optim(config.optim, config.batch_size)
  for field in ("ckpt.every_steps", "ckpt.keep", "log.every_steps", "log.sample_count"):
    section, name = field.split(".")
    value = config[section][name]
    if not isinstance(value, int) or value < 1:
      raise ConfigError(f"config.{field}: must be a positive int, got {value!r}")
  if not isinstance(config.log.sample_every_steps, int) or config.log.sample_every_steps < 0:
    raise ConfigError(f"config.log.sample_every_steps: must be an int >= 0 (0 disables), got "
                      f"{config.log.sample_every_steps!r}")
  if config.task == "tokenizer" and config.optim.grad_accum != 1:
    raise ConfigError("config.optim.grad_accum: the tokenizer task updates two networks per "
                      "step and does not accumulate; use 1")
  if config.task == "tokenizer" and config.data.name == "codes":
    raise ConfigError("config.data.name: the tokenizer task trains on images, not 'codes'")
  captions = config.data.name in data.CAPTION_SOURCES or bool(config.data.get("caption_key"))
  if config.task == "generator" and config.model.get("condition", "class") == "caption":
    if not captions:
      raise ConfigError("config.data.name: a caption model trains on image-caption data "
                        f"({', '.join(data.CAPTION_SOURCES)}, or a TFDS set with "
                        f"data.caption_key), not {config.data.name!r}")
  elif captions:
    raise ConfigError(f"config.data.name: {config.data.name!r} yields captions; set "
                      "config.model.condition='caption' (or train on class-labelled data)")


def prepare_workdir(workdir) -> epath.Path:
  """The workdir, created, after proving it is writable (before any work is done). Each
  process probes with its own file: the processes of a job share the folder."""
  path = epath.Path(workdir)
  probe = path / f".write_probe.{os.getpid()}.{jax.process_index()}"
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise TrainingError(f"--workdir {workdir}: not writable ({e})") from e
  return path


@dataclasses.dataclass
class Task:
  """What differs between the generator and the tokenizer tasks."""
  init: Callable[[], state_lib.TrainState]  # builds the train state (run under jit)
  step: Callable  # (state, batch, key, frozen) -> (state, metrics)
  batch: dict[str, tuple[tuple[int, ...], Any]]  # global batch entries: (shape, dtype)
  frozen: Any  # the frozen network the step reads (tokenizer / LPIPS), or None
  flops_per_step: float | None  # analytic model FLOPs, or None to ask XLA
  tokens_per_example: int
  # (h, w) pixel size -> the batch entries of that aspect bucket (None: the one shape above)
  batch_for: Callable[[tuple[int, int]], dict] | None = None
  buckets: tuple = ()  # the (h, w) pixel sizes batches may take (one compiled step each)


def image_batch(config, size: tuple[int, int] | None = None, text_ids: bool = False) -> dict:
  """Global batch entries of images (of one aspect bucket's (h, w), default square) and
  their condition: labels, T5 ids encoded in the step, or pre-extracted caption features."""
  h, w = size or (config.data.image_size, config.data.image_size)
  batch = {"image": ((config.batch_size, h, w, 3), jnp.float32)}
  if config.model.get("condition", "class") != "caption" or config.task != "generator":
    return {**batch, "label": ((config.batch_size,), jnp.int32)}
  p = config.model.cls_token_num
  if not text_ids:  # pre-extracted features (or their shapes, for the memory report)
    return {**batch, "caption": ((config.batch_size, p, config.model.caption_dim), jnp.float32),
            "caption_mask": ((config.batch_size, p), jnp.bool_)}
  return {**batch, "text_ids": ((config.batch_size, p), jnp.int32),
          "text_mask": ((config.batch_size, p), jnp.int32)}


def with_text_encoder(step: Callable) -> Callable:
  """The generator step for batches of T5 ids: the frozen T5 (second frozen network) encodes
  them on the devices, left-padded as LlamaGen, before the step proper."""
  def train_step(state, batch, key, frozen):
    tokenizer, t5 = frozen
    if "text_ids" in batch:
      features = t5(batch["text_ids"], batch["text_mask"]).astype(jnp.float32)
      caption, mask = text_encoder.left_pad(features, batch["text_mask"])
      batch = {k: v for k, v in batch.items() if k not in ("text_ids", "text_mask")}
      batch = {**batch, "caption": caption, "caption_mask": mask}
    return step(state, batch, key, tokenizer)
  return train_step


def generator_task(config, tokenizer, t5=None) -> Task:
  """MAR / AR on codes, or on images encoded by the frozen tokenizer inside the step."""
  tx = optim.make_optimizer(config.optim, config.total_steps)
  objective = objectives.LOSSES[config.objective.name]
  step = steps.make_generator_step(
      lambda model, batch, key: objective(model, batch, key, config.objective), tx,
      optim.learning_rate(config.optim, config.total_steps), grad_accum=config.optim.grad_accum,
      ema_decay=config.optim.ema_decay)
  g = config.model.grid_size
  if config.data.name == "codes":
    batch = {"codes": ((config.batch_size, g, g), jnp.int32),
             "label": ((config.batch_size,), jnp.int32)}
  elif tokenizer is None:
    raise ConfigError("config.tokenizer.ckpt: training on images needs the tokenizer that "
                      "encodes them (or train on extracted codes with data.name='codes')")
  else:
    batch = image_batch(config, text_ids=t5 is not None)
  frozen = tokenizer if "image" in batch else None
  buckets = tuple(tuple(b) for b in config.data.buckets) or ((config.data.image_size,) * 2,)
  if "text_ids" in batch:
    step, frozen = with_text_encoder(step), (tokenizer, t5)
  return Task(
      init=lambda: state_lib.init_train_state(
          Transformer(config.model, rngs=nnx.Rngs(config.seed)), tx,
          ema=config.optim.ema_decay > 0),
      step=step,
      batch=image_batch(config, buckets[0], t5 is not None) if "image" in batch else batch,
      frozen=frozen, flops_per_step=flops_lib.generator_step_flops(config),
      tokens_per_example=g * g,
      batch_for=((lambda size: image_batch(config, size, t5 is not None)) if "image" in batch
                 else None),
      buckets=buckets if "image" in batch else ())


def tokenizer_task(config) -> Task:
  """VQ + PatchGAN with two optimizers; LPIPS (if weights are given) is the frozen network."""
  tx = optim.make_optimizer(config.optim, config.total_steps)
  disc_tx = tx  # LlamaGen gives the discriminator the same Adam recipe, with its own state
  loss = config.tokenizer.loss
  step = steps.make_tokenizer_step(
      tx, disc_tx, optim.learning_rate(config.optim, config.total_steps),
      tokenizer_losses.LossWeights.from_config(loss), ema_decay=config.optim.ema_decay)
  down = 2 ** (len(config.tokenizer.ch_mult) - 1)
  return Task(
      init=lambda: state_lib.init_train_state(
          vq.VQModel(config.tokenizer, rngs=nnx.Rngs(config.seed)), tx,
          ema=config.optim.ema_decay > 0, disc_tx=disc_tx,
          disc=tokenizer_losses.build_discriminator(loss, nnx.Rngs(config.seed + 1))),
      step=step, batch=image_batch(config), frozen=tokenizer_losses.build_lpips(loss),
      flops_per_step=None, tokens_per_example=(config.data.image_size // down) ** 2)


def check_batch(local: dict, expected: dict) -> None:
  """TrainingError unless this process's batch has the entries and shapes the step expects."""
  n = jax.process_count()
  for name, (shape, _) in expected.items():
    want = (shape[0] // n,) + tuple(shape[1:])
    if name not in local:
      raise TrainingError(f"the data pipeline gives entries {sorted(local)} but the train step "
                          f"needs {name!r}: is config.data.name right?")
    if tuple(np.shape(local[name])) != want:
      raise TrainingError(f"batch entry {name!r} has shape {list(np.shape(local[name]))}, "
                          f"expected {list(want)} (batch_size / processes, and the sizes in "
                          f"config.data / config.model)")


def load_frozen_tokenizer(config, abstract_only: bool):
  """The generator's frozen tokenizer (encodes images in the step, decodes sample grids):
  loaded from `tokenizer.ckpt`, or only its shapes for the memory report (no file needed)."""
  if config.task != "generator":
    return None
  if abstract_only:
    return nnx.eval_shape(lambda: vq.VQModel(config.tokenizer, rngs=nnx.Rngs(0)))
  if not config.tokenizer.ckpt:
    return None
  return checkpoints.load_tokenizer(config.tokenizer.ckpt, config.tokenizer)


class Preemption:
  """SIGTERM on a single process sets a flag; multi-process jobs use JAX's preemption sync
  point (jax.distributed installs its own SIGTERM notice), via the checkpoint manager."""

  def __init__(self):
    self.signalled = False
    if jax.process_count() == 1:
      self.previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    logging.warning("SIGTERM: saving a checkpoint after the current step, then stopping")
    self.signalled = True

  def reached(self, manager, step: int) -> bool:
    return self.signalled or manager.reached_preemption(step)

  def restore(self) -> None:
    if jax.process_count() == 1:
      signal.signal(signal.SIGTERM, self.previous)


class Profiler:
  """Traces steps `first .. first + count - 1` (the `--profile` option) into
  `workdir/profile`, readable by TensorBoard's profile plugin or Perfetto."""

  def __init__(self, profile: tuple[int, int] | None, workdir: epath.Path):
    self.first, self.count = profile if profile else (0, 0)
    self.folder, self.active = workdir / "profile", False

  def before(self, step: int) -> None:
    if self.count and step == self.first:
      jax.profiler.start_trace(str(self.folder))
      self.active = True

  def after(self, step: int, metrics) -> None:
    if self.active and step == self.first + self.count - 1:
      jax.block_until_ready(metrics)
      self.close()
      cli.notice("profile of steps %d..%d written to %s", self.first, step, self.folder)

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False


def sample_labels(config) -> np.ndarray:
  """Classes spread evenly over the label range, the same at every sample step."""
  return np.linspace(0, config.model.num_classes - 1, config.log.sample_count).round().astype(
      np.int32)


def train(config, workdir, *, memory_report: bool = False,
          profile: tuple[int, int] | None = None, topology=None) -> dict:
  """Train (or resume) `config` in `workdir`; returns {'step', 'metrics', 'stopped'}.
  With `memory_report`, compile the step, print per-device memory, return {'memory': ...}.
  `profile` (first step, count): trace those steps into `workdir/profile` for TensorBoard.
  `topology` (parallel/topology.py, with `memory_report`): compile for that TPU slice instead."""
  # 0. checks that need nothing built
  config = configlib.finalize(topology_lib.configure(config, topology))
  check_config(config)
  if not memory_report:
    workdir = prepare_workdir(workdir)

  # 1. mesh and logical-axis rules (the model's activation constraints read them when traced)
  mesh = mesh_lib.make_mesh(config.mesh, topology.devices() if topology else None)
  rules = rules_lib.make_rules(config.mesh.rules.to_dict())
  replicated = NamedSharding(mesh, PartitionSpec())
  cli.notice("mesh %s over %d devices (%s), %d processes", dict(mesh.shape), mesh.size,
             mesh.devices.flat[0].device_kind, jax.process_count())
  with jax.set_mesh(mesh), rules_lib.axis_rules(rules):

    # 2.-4. the task (model, optimizer, loss, step; frozen networks it reads), the shardings
    #    of its state (by logical axes; nothing created yet), batch and frozen networks, and
    #    the compiled step (the state donated: updated in place). remat_policy 'auto' compiles
    #    until a policy fits in device memory (training/remat_choice.py)
    tokenizer = load_frozen_tokenizer(config, abstract_only=memory_report)
    t5 = load_frozen_t5(config, memory_report)
    batch_sharding = mesh_lib.batch_sharding(mesh)
    if config.batch_size % mesh_lib.batch_shards(mesh):
      raise ConfigError(f"config.batch_size: {config.batch_size} does not split over the "
                        f"{mesh_lib.batch_shards(mesh)} data x fsdp shards")
    key = (jax.ShapeDtypeStruct((), jax.eval_shape(jax.random.key, 0).dtype, sharding=replicated)
           if memory_report else jax.device_put(jax.random.key(config.seed), replicated))
    compiled_parts = {}

    def compile_step(policy: str | None):
      c = config
      if policy is not None:
        c = config.copy_and_resolve_references()
        c.model.remat_policy = policy
      task = tokenizer_task(c) if c.task == "tokenizer" else generator_task(c, tokenizer, t5)
      abstract_state, state_shardings = state_lib.abstract_sharded(task.init, mesh, rules)
      abstract_batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
                        for k, (shape, dtype) in task.batch.items()}
      frozen_shardings = (rules_lib.param_shardings(task.frozen, mesh, rules)
                          if task.frozen is not None else None)
      jitted = jax.jit(task.step, in_shardings=(state_shardings, batch_sharding, replicated,
                                                frozen_shardings),
                       out_shardings=(state_shardings, replicated), donate_argnums=0)
      frozen_abstract = (state_lib.with_shardings(task.frozen, frozen_shardings)
                         if task.frozen is not None else None)
      step = jitted.lower(abstract_state, abstract_batch, key, frozen_abstract).compile()
      compiled_parts[policy] = (c, task, abstract_state, state_shardings, frozen_shardings, step,
                                jitted, frozen_abstract, abstract_batch)
      return step

    if config.task == "generator" and config.model.remat_policy == "auto":
      choice = remat_choice.choose(compile_step,
                                   remat_choice.device_memory_bytes(mesh.devices.flat[0]))
      cli.notice("%s", remat_choice.describe(choice))
      parts = compiled_parts[choice.policy]
    else:
      memory.compile_within_memory(compile_step, None)
      parts = compiled_parts[None]
    (config, task, abstract_state, state_shardings, frozen_shardings, train_step, jitted,
     frozen_abstract, abstract_batch) = parts
    compiled_parts.clear()  # the policies not chosen
    # one compiled step per aspect bucket (batch shape), made when the bucket first comes up
    compiled = {_shape_key(abstract_batch): train_step}

    def step_for(local):
      shapes = _shape_key(local, jax.process_count())
      if shapes not in compiled:
        size = tuple(local["image"].shape[1:3])
        check_batch(local, task.batch_for(size))
        spec = task.batch_for(size)
        ab = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
              for k, (shape, dtype) in spec.items()}
        compiled[shapes] = jitted.lower(abstract_state, ab, key, frozen_abstract).compile()
        cli.notice("compiled the train step for the %dx%d bucket (%d of at most %d)", *size,
                   len(compiled), max(len(task.buckets), 1))
      return compiled[shapes]

    if memory_report:
      result = compile_report.for_mesh(
          train_step, mesh, "train step", topology=topology, model_flops=task.flops_per_step,
          remat_policy=config.model.remat_policy, items_per_call=config.batch_size,
          peak_override=config.log.peak_tflops)
      print(result.format())
      return {"memory": result.memory, "remat_policy": config.model.remat_policy,
              "report": result.as_dict()}
    frozen = jax.device_put(task.frozen, frozen_shardings) if task.frozen is not None else None
    if config.log.sample_every_steps and config.model.get("condition", "class") == "caption":
      logging.warning("log.sample_every_steps: the trainer's sample grids are drawn for class "
                      "models; sample a caption model with `python -m maskgil_jax.sample "
                      "--prompt ...`")
    elif config.log.sample_every_steps and tokenizer is None and config.task == "generator":
      logging.warning("log.sample_every_steps is set but there is no tokenizer.ckpt to turn "
                      "sampled codes into images: no sample grids")
    if tokenizer is not None:  # one copy on the devices when the step reads it too
      if isinstance(task.frozen, tuple):
        tokenizer = frozen[0]
      else:
        tokenizer = frozen if task.frozen is tokenizer else jax.device_put(
            tokenizer, rules_lib.param_shardings(tokenizer, mesh, rules))
    if len(task.buckets) > 1:
      cli.notice("aspect buckets %s: at most one compiled step each",
                 ", ".join(f"{h}x{w}" for h, w in task.buckets))

    # 5. data: this process's share of each global batch, a checkpointable iterator
    data_iter = data.make_pipeline(config.data, batch_size=config.batch_size, seed=config.seed,
                                   text=config.text)

    # 6. resume from the workdir, else initialise (optionally from other parameters)
    manager = checkpoints.make_manager(workdir / checkpoints.SUBDIR,
                                       every_steps=config.ckpt.every_steps, keep=config.ckpt.keep)
    found = checkpoints.restore_state(manager, abstract_state, data_iter, quarantine=True,
                                      restart_data=config.ckpt.restart_data)
    if found is not None:
      state, start = found
      cli.notice("resumed from %s/%d", manager.directory, start)
    else:
      state, start = state_lib.create_sharded(task.init, state_shardings), 0
      if config.ckpt.init_from:
        params = checkpoints.restore_params(config.ckpt.init_from, abstract_state.params)
        ema = (jax.tree.map(lambda x: jnp.array(x, copy=True), params)
               if state.ema_params is not None else None)
        state = state.replace(params=params, ema_params=ema)
        cli.notice("parameters initialised from %s", config.ckpt.init_from)

    # 7. the loop: one step dispatched ahead of the host; metrics summed on the device and
    #    fetched at log steps only (their means over the interval are logged)
    logger = metrics_lib.MetricsLogger(workdir, config.total_steps, config.log.every_steps)
    flops_per_step = task.flops_per_step or _xla_flops(train_step, mesh.size)
    throughput = metrics_lib.Throughput(
        batch_size=config.batch_size, tokens_per_example=task.tokens_per_example,
        num_devices=mesh.size, flops_per_step=flops_per_step,
        peak_tflops=flops_lib.peak_tflops(flops_lib.device_kind(), config.log.peak_tflops))
    interval = metrics_lib.IntervalMeans()
    tracer = Profiler(profile, workdir)
    preemption = Preemption()
    previous, stopped, step, last = None, "done", start, {}
    cli.notice("training steps %d..%d of %s (batch %d)", start + 1, config.total_steps,
               config.task, config.batch_size)
    try:
      for step in range(start + 1, config.total_steps + 1):
        tracer.before(step)
        local = next(data_iter)
        if step == start + 1:
          check_batch(local, task.batch_for(tuple(local["image"].shape[1:3])) if task.batch_for
                      else task.batch)
        batch = mesh_lib.global_batch({k: local[k] for k in task.batch}, mesh)
        state, step_metrics = step_for(local)(state, batch, key, frozen)
        if previous is not None and bool(previous[1]["nonfinite"]):
          stopped = _nonfinite(previous, manager)
          break
        previous = (step, step_metrics)
        interval.add(step_metrics)
        tracer.after(step, step_metrics)
        logger.progress(step)
        if step == start + 1:
          jax.block_until_ready(step_metrics)
          throughput.mark(step)  # timing starts after the compilation of the first step
        if step % config.log.every_steps == 0 or step == config.total_steps:
          if not bool(step_metrics["nonfinite"]):
            last = interval.take()
            logger.scalars(step, {**metrics_lib.train_scalars(last), **throughput.measure(step)})
        if (config.log.sample_every_steps and tokenizer is not None and config.task == "generator"
            and config.model.condition == "class" and step % config.log.sample_every_steps == 0):
          _write_samples(config, state, tokenizer, step, workdir, logger, replicated)
        preempted = preemption.reached(manager, step)
        checkpoints.save(manager, step, state, config, data_iter, force=preempted)
        if preempted:
          cli.notice("preemption: checkpoint saved at step %d; rerun the same command to resume",
                     step)
          stopped = "preempted"
          break
      else:
        if previous is not None and bool(previous[1]["nonfinite"]):
          stopped = _nonfinite(previous, manager)
      if stopped != "nonfinite" and manager.latest_step() != step:
        checkpoints.save(manager, step, state, config, data_iter, force=True)
    finally:
      tracer.close()
      preemption.restore()
      manager.wait_until_finished()
      manager.close()
      logger.close()
  if stopped == "nonfinite":
    raise TrainingError(
        f"non-finite loss or gradient at step {previous[0]}: stopped without saving; the last "
        f"checkpoint ({manager.directory}/{manager.latest_step()}) holds finite parameters "
        f"(lower optim.lr, raise optim.warmup_steps or check the data, then restart)")
  cli.summary("%s at step %d of %d; checkpoints in %s", stopped, step, config.total_steps,
             manager.directory)
  return {"step": step, "metrics": last, "stopped": stopped}


def _shape_key(batch: dict, processes: int = 1) -> tuple:
  """The global shapes of a batch's entries: one compiled step per distinct key."""
  return tuple(sorted((k, (v.shape[0] * processes,) + tuple(v.shape[1:]))
                      for k, v in batch.items()))


def load_frozen_t5(config, abstract_only: bool):
  """The frozen T5 a caption model's step encodes text ids with (text.encoder), or None when
  the data brings pre-extracted features (or only the memory report is wanted: its batch is
  then the features' shapes)."""
  if (config.task != "generator" or config.model.get("condition", "class") != "caption"
      or config.data.text_features or not config.text.encoder or abstract_only):
    return None
  return text_encoder.load_text_encoder(
      config.text.encoder, max_length=config.text.max_length, dtype=config.text.dtype,
      caption_dim=config.model.caption_dim).model


def _nonfinite(previous, manager) -> str:
  logging.error("non-finite loss or gradient at step %d; stopping, last checkpoint kept: %s",
                previous[0], manager.latest_step())
  return "nonfinite"


def _xla_flops(compiled, num_devices: int) -> float | None:
  per_device = flops_lib.compiled_flops(compiled)
  return per_device * num_devices if per_device else None


def _write_samples(config, state, tokenizer, step: int, workdir: epath.Path, logger,
                   replicated: NamedSharding) -> None:
  """A grid from the generation decoders (EMA weights if kept) as PNG and in TensorBoard."""
  model = state.ema_params if state.ema_params is not None else state.params
  labels = jax.device_put(sample_labels(config), replicated)
  images = np.asarray(jax.device_get(decode.sample_grid(
      model, tokenizer, labels, jax.random.key(config.seed + 1), config)))
  if jax.process_index() == 0:
    grid = decode.image_grid(images)
    decode.write_png(workdir / "samples" / f"step_{step:08d}.png", grid)
    logger.images(step, "samples", grid[None])


# ---- command line ------------------------------------------------------------------------
def parse_profile(text: str | None) -> tuple[int, int] | None:
  """`--profile FIRST[:COUNT]` -> (first step, count); COUNT defaults to 3."""
  if not text:
    return None
  first, _, count = text.partition(":")
  try:
    value = int(first), int(count or 3)
  except ValueError:
    raise cli.UsageError(f"--profile {text}: expected FIRST[:COUNT], e.g. 10:3") from None
  if value[0] < 1 or value[1] < 1:
    raise cli.UsageError(f"--profile {text}: the first step and the count must be >= 1")
  return value


def parser() -> cli.Parser:
  p = cli.Parser("train", __doc__.split("\n\n")[0], config="required")
  p.add_argument("--workdir", required=True, help="where checkpoints, logs and samples go; "
                 "rerunning with the same workdir resumes")
  p.add_argument("--memory-report", action="store_true", help="compile the train step for the "
                 "config, print per-device memory, exit without training")
  p.add_argument("--profile", metavar="FIRST[:COUNT]", help="trace COUNT steps (default 3) "
                 "from step FIRST into WORKDIR/profile (TensorBoard)")
  topology_lib.add_flags(p)
  p.add_argument("--compilation-cache", metavar="DIR", help="persistent XLA compilation cache "
                 "folder: a rerun reuses compiled steps")
  return p


def _main(argv) -> int:
  args = parser().parse(argv)
  profile = parse_profile(args.profile)
  config = cli.load_config(args)
  check_config(configlib.finalize(config))  # a bad field is reported before anything is created
  if args.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
  m = config.mesh  # before JAX touches a device
  mesh_lib.initialize_distributed(m.distributed, heartbeat_timeout_s=m.heartbeat_timeout_s,
                                  local_devices=m.local_devices)
  if not args.memory_report:
    workdir = prepare_workdir(args.workdir)
    if "://" not in args.workdir:  # a readable log beside the metrics (local workdirs)
      cli.setup_logging(str(workdir), "train")
  train(config, args.workdir, memory_report=args.memory_report, profile=profile,
        topology=topology_lib.from_args(args))
  return 0


def main(argv=None) -> int:
  return cli.run(_main, argv)


if __name__ == "__main__":
  sys.exit(main())
