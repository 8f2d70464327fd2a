"""The trainer: `python -m maskgil_jax.train --config configs/x.py[:arg] --workdir DIR`.

  --config.a.b=value   override any config field      --memory_report   compile, print memory, exit

Read top to bottom, like a recipe: mesh -> model, optimizer and train step for the task ->
shardings -> compiled step -> data -> restore or initialise -> loop (log, sample, checkpoint).
Tasks (`config.task`):
  generator  MaskGIL (objective 'mar') or LlamaGen (objective 'ar') on codes, or on images that
             a frozen tokenizer (`tokenizer.ckpt`) encodes inside the step;
  tokenizer  the VQ tokenizer with its perceptual, adversarial and codebook losses and a
             PatchGAN discriminator with its own optimizer.
Restarting with the same --workdir continues exactly where the last checkpoint stopped
(parameters, optimizer, step, data position); SIGTERM (preemption) saves first.
"""
from __future__ import annotations

import dataclasses
import signal
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from etils import epath
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from ml_collections import config_flags

from maskgil_jax import checkpoints, cli, configlib, data, decode
from maskgil_jax.configlib import ConfigError
from maskgil_jax.data.sources import DataError
from maskgil_jax.models import vq
from maskgil_jax.models.transformer import Transformer
from maskgil_jax.parallel import mesh as mesh_lib
from maskgil_jax.parallel import rules as rules_lib
from maskgil_jax.training import flops as flops_lib
from maskgil_jax.training import memory, metrics as metrics_lib, objectives, optim
from maskgil_jax.training import state as state_lib, steps, tokenizer_losses


class TrainingError(RuntimeError):
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


def prepare_workdir(workdir) -> epath.Path:
  """The workdir, created, after proving it is writable (before any work is done)."""
  path = epath.Path(workdir)
  probe = path / ".write_probe"
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


def image_batch(config) -> dict:
  s = config.data.image_size
  return {"image": ((config.batch_size, s, s, 3), jnp.float32),
          "label": ((config.batch_size,), jnp.int32)}


def generator_task(config, tokenizer) -> Task:
  """MAR / AR on codes, or on images encoded by the frozen tokenizer inside the step."""
  tx = optim.make_optimizer(config.optim, config.total_steps)
  objective = {"mar": objectives.mar_loss, "ar": objectives.ar_loss}[config.objective.name]
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
    batch = image_batch(config)
  return Task(
      init=lambda: state_lib.init_train_state(
          Transformer(config.model, rngs=nnx.Rngs(config.seed)), tx,
          ema=config.optim.ema_decay > 0),
      step=step, batch=batch, frozen=tokenizer if "image" in batch else None,
      flops_per_step=flops_lib.generator_step_flops(config), tokens_per_example=g * g)


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


def sample_labels(config) -> np.ndarray:
  """Classes spread evenly over the label range, the same at every sample step."""
  return np.linspace(0, config.model.num_classes - 1, config.log.sample_count).round().astype(
      np.int32)


def train(config, workdir, *, memory_report: bool = False) -> dict:
  """Train (or resume) `config` in `workdir`; returns {'step', 'metrics', 'stopped'}.
  With `memory_report`, compile the step, print per-device memory, return {'memory': ...}."""
  # 0. checks that need nothing built
  config = configlib.finalize(config)
  check_config(config)
  if not memory_report:
    workdir = prepare_workdir(workdir)

  # 1. mesh and logical-axis rules (the model's activation constraints read them when traced)
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = rules_lib.make_rules(config.mesh.rules.to_dict())
  replicated = NamedSharding(mesh, PartitionSpec())
  logging.info("mesh %s over %d devices (%s), %d processes", dict(mesh.shape), mesh.size,
               flops_lib.device_kind(), jax.process_count())
  with jax.set_mesh(mesh), rules_lib.axis_rules(rules):

    # 2. the task: model, optimizer, loss and train step; frozen networks it reads
    tokenizer = load_frozen_tokenizer(config, abstract_only=memory_report)
    task = (tokenizer_task(config) if config.task == "tokenizer"
            else generator_task(config, tokenizer))

    # 3. shardings of the state (parameters and optimizer moments by logical axes), batch and
    #    frozen networks; the state is not created yet
    abstract_state, state_shardings = state_lib.abstract_sharded(task.init, mesh, rules)
    batch_sharding = mesh_lib.batch_sharding(mesh)
    if config.batch_size % mesh_lib.batch_shards(mesh):
      raise ConfigError(f"config.batch_size: {config.batch_size} does not split over the "
                        f"{mesh_lib.batch_shards(mesh)} data x fsdp shards")
    abstract_batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
                      for k, (shape, dtype) in task.batch.items()}
    frozen_shardings = (rules_lib.param_shardings(task.frozen, mesh, rules)
                        if task.frozen is not None else None)
    key = jax.device_put(jax.random.key(config.seed), replicated)

    # 4. the compiled train step: explicit shardings, the state donated (updated in place)
    jitted = jax.jit(task.step, in_shardings=(state_shardings, batch_sharding, replicated,
                                              frozen_shardings),
                     out_shardings=(state_shardings, replicated), donate_argnums=0)
    frozen_abstract = (state_lib.with_shardings(task.frozen, frozen_shardings)
                       if task.frozen is not None else None)
    train_step = jitted.lower(abstract_state, abstract_batch, key, frozen_abstract).compile()
    if memory_report:
      summary = memory.memory_summary(train_step)
      print(memory.format_memory(summary, flops_lib.device_kind(), mesh.size))
      return {"memory": summary}
    frozen = jax.device_put(task.frozen, frozen_shardings) if task.frozen is not None else None
    if config.log.sample_every_steps and tokenizer is None and config.task == "generator":
      logging.warning("log.sample_every_steps is set but there is no tokenizer.ckpt to turn "
                      "sampled codes into images: no sample grids")
    if tokenizer is not None:  # one copy on the devices when the step reads it too
      tokenizer = frozen if task.frozen is tokenizer else jax.device_put(
          tokenizer, rules_lib.param_shardings(tokenizer, mesh, rules))

    # 5. data: this process's share of each global batch, a checkpointable iterator
    data_iter = data.make_pipeline(config.data, batch_size=config.batch_size, seed=config.seed)

    # 6. resume from the workdir, else initialise (optionally from other parameters)
    manager = checkpoints.make_manager(workdir / checkpoints.SUBDIR,
                                       every_steps=config.ckpt.every_steps, keep=config.ckpt.keep)
    found = checkpoints.restore_state(manager, abstract_state, data_iter, quarantine=True,
                                      restart_data=config.ckpt.restart_data)
    if found is not None:
      state, start = found
      logging.info("resumed from %s/%d", manager.directory, start)
    else:
      state, start = state_lib.create_sharded(task.init, state_shardings), 0
      if config.ckpt.init_from:
        params = checkpoints.restore_params(config.ckpt.init_from, abstract_state.params)
        ema = (jax.tree.map(lambda x: jnp.array(x, copy=True), params)
               if state.ema_params is not None else None)
        state = state.replace(params=params, ema_params=ema)
        logging.info("parameters initialised from %s", config.ckpt.init_from)

    # 7. the loop: one step dispatched ahead of the host; metrics fetched at log steps only
    logger = metrics_lib.MetricsLogger(workdir, config.total_steps, config.log.every_steps)
    flops_per_step = task.flops_per_step or _xla_flops(train_step, mesh.size)
    throughput = metrics_lib.Throughput(
        batch_size=config.batch_size, tokens_per_example=task.tokens_per_example,
        num_devices=mesh.size, flops_per_step=flops_per_step,
        peak_tflops=flops_lib.peak_tflops(flops_lib.device_kind(), config.log.peak_tflops))
    preemption = Preemption()
    previous, stopped, step, last = None, "done", start, {}
    try:
      for step in range(start + 1, config.total_steps + 1):
        local = next(data_iter)
        if step == start + 1:
          check_batch(local, task.batch)
        batch = mesh_lib.global_batch({k: local[k] for k in task.batch}, mesh)
        state, step_metrics = train_step(state, batch, key, frozen)
        if previous is not None and bool(previous[1]["nonfinite"]):
          stopped = _nonfinite(previous, manager)
          break
        previous = (step, step_metrics)
        logger.progress(step)
        if step == start + 1:
          jax.block_until_ready(step_metrics)
          throughput.mark(step)  # timing starts after the compilation of the first step
        if step % config.log.every_steps == 0 or step == config.total_steps:
          last = jax.device_get(step_metrics)
          if not last["nonfinite"]:
            logger.scalars(step, {**metrics_lib.train_scalars(last), **throughput.measure(step)})
        if (config.log.sample_every_steps and tokenizer is not None and config.task == "generator"
            and step % config.log.sample_every_steps == 0):
          _write_samples(config, state, tokenizer, step, workdir, logger, replicated)
        preempted = preemption.reached(manager, step)
        checkpoints.save(manager, step, state, config, data_iter, force=preempted)
        if preempted:
          stopped = "preempted"
          break
      else:
        if previous is not None and bool(previous[1]["nonfinite"]):
          stopped = _nonfinite(previous, manager)
      if stopped != "nonfinite" and manager.latest_step() != step:
        checkpoints.save(manager, step, state, config, data_iter, force=True)
    finally:
      preemption.restore()
      manager.wait_until_finished()
      manager.close()
      logger.close()
  if stopped == "nonfinite":
    raise TrainingError(
        f"non-finite loss or gradient at step {previous[0]}: stopped without saving; the last "
        f"checkpoint ({manager.directory}/{manager.latest_step()}) holds finite parameters "
        f"(lower optim.lr, raise optim.warmup_steps or check the data, then restart)")
  summary = f"{stopped} at step {step} of {config.total_steps}; checkpoints in {manager.directory}"
  logging.info(summary)
  print(summary)
  return {"step": step, "metrics": last, "stopped": stopped}


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


# ---- command line (flags defined only when run as a program, so importing this module from
# tests, notebooks or other commands never clashes with their flags) --------------------------
def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  flag = flags.FLAGS
  if flag.config is None or not flag.workdir:
    raise app.UsageError("--config and --workdir are required")
  cli.quiet_library_logs()
  m = flag.config.mesh  # before JAX touches a device
  mesh_lib.initialize_distributed(m.distributed, heartbeat_timeout_s=m.heartbeat_timeout_s,
                                  local_devices=m.local_devices)
  if not flag.memory_report and jax.process_index() == 0 and "://" not in flag.workdir:
    prepare_workdir(flag.workdir)  # a readable log beside the metrics (local workdirs)
    logging.get_absl_handler().use_absl_log_file("train", flag.workdir)
  try:
    train(flag.config, flag.workdir, memory_report=flag.memory_report)
  except (DataError, TrainingError) as e:  # the user's to fix: one line, not a traceback
    logging.error("%s", e)
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "experiment file, configs/x.py or "
                                  "configs/x.py:arg", lock_config=True)
  flags.DEFINE_string("workdir", None, "where checkpoints, logs and samples go; rerunning "
                      "with the same workdir resumes")
  flags.DEFINE_bool("memory_report", False, "compile the train step for the config, print "
                    "per-device memory, exit without training")
  cli.run(main)
