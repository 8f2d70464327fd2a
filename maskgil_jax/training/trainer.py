"""The trainer (`train`), which the `train` command and the demo run.

Read top to bottom, like a recipe: mesh -> model, optimizer and train step for the task ->
shardings -> compiled step -> data -> restore or initialise -> loop (log, sample, checkpoint).
The tasks (`config.task`: generator, tokenizer) are `training/tasks.py`.
Restarting with the same --workdir continues exactly where the last checkpoint stopped
(parameters, optimizer, step, data position); SIGTERM (preemption) saves first.
"""
from __future__ import annotations

import dataclasses
import os
import signal
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec

from maskgil_jax import checkpoints, cli, configlib, data, decode, loading
from maskgil_jax.configlib import ConfigError
from maskgil_jax.errors import UserError
from maskgil_jax.parallel import mesh as mesh_lib
from maskgil_jax.parallel import rules as rules_lib
from maskgil_jax.training import flops as flops_lib
from maskgil_jax.training import memory, metrics as metrics_lib, optim
from maskgil_jax.parallel import topology as topology_lib
from maskgil_jax.training import compile_report, remat_choice
from maskgil_jax.training import state as state_lib
from maskgil_jax.training.tasks import Task, generator_task, tokenizer_task


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
  captions = config.data.name in data.CAPTION_SOURCES or bool(config.data.caption_key)
  if config.task == "generator" and config.model.condition == "caption":
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
    return loading.abstract_tokenizer(config.tokenizer)
  if not config.tokenizer.ckpt:
    return None
  return loading.load_tokenizer(config.tokenizer.ckpt, config.tokenizer)


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


@dataclasses.dataclass
class CompiledStep:
  """The task and its train step compiled for the mesh: what the loop runs and restores into."""
  config: Any  # the finalized config (remat_policy resolved when it was 'auto')
  task: Task
  abstract_state: Any  # shapes and shardings of the train state (restore target)
  state_shardings: Any
  frozen_shardings: Any  # of the frozen networks the step reads, or None
  frozen_abstract: Any
  batch_sharding: Any
  key: jax.Array  # the run's RNG key, replicated
  jitted: Any  # the jitted step (lowered again for each new aspect bucket)
  steps: dict  # global batch shapes -> compiled step (one per bucket met so far)

  @property
  def first(self):
    """The step compiled for the task's own batch (the memory report's)."""
    return next(iter(self.steps.values()))

  def step_for(self, local: dict):
    """The compiled step of this batch's shapes: compiled the first time a bucket comes up."""
    shapes = _shape_key(local, jax.process_count())
    if shapes not in self.steps:
      size = tuple(local["image"].shape[1:3])
      spec = self.task.batch_for(size)
      check_batch(local, spec)
      self.steps[shapes] = self.jitted.lower(
          self.abstract_state, _abstract_batch(spec, self.batch_sharding), self.key,
          self.frozen_abstract).compile()
      cli.notice("compiled the train step for the %dx%d bucket (%d of at most %d)", *size,
                 len(self.steps), max(len(self.task.buckets), 1))
    return self.steps[shapes]


def _abstract_batch(spec: dict, sharding) -> dict:
  return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
          for k, (shape, dtype) in spec.items()}


def compile_step(config, mesh, rules, tokenizer, t5, policy: str | None = None, *,
                 abstract_key: bool = False) -> CompiledStep:
  """The task of `config` (remat_policy `policy` when given) and its step compiled on `mesh`:
  state, batch and frozen networks placed by the logical-axis rules, the state donated.
  `abstract_key`: the RNG key as a shape only (a compile-only target: nothing is placed)."""
  if policy is not None:
    config = config.copy_and_resolve_references()
    config.model.remat_policy = policy
  task = tokenizer_task(config) if config.task == "tokenizer" else generator_task(
      config, tokenizer, t5)
  replicated = NamedSharding(mesh, PartitionSpec())
  batch_sharding = mesh_lib.batch_sharding(mesh)
  key = (jax.ShapeDtypeStruct((), jax.eval_shape(jax.random.key, 0).dtype, sharding=replicated)
         if abstract_key else jax.device_put(jax.random.key(config.seed), replicated))
  abstract_state, state_shardings = state_lib.abstract_sharded(task.init, mesh, rules)
  frozen_shardings = (rules_lib.param_shardings(task.frozen, mesh, rules)
                      if task.frozen is not None else None)
  jitted = jax.jit(task.step, in_shardings=(state_shardings, batch_sharding, replicated,
                                            frozen_shardings),
                   out_shardings=(state_shardings, replicated), donate_argnums=0)
  frozen_abstract = (state_lib.with_shardings(task.frozen, frozen_shardings)
                     if task.frozen is not None else None)
  abstract_batch = _abstract_batch(task.batch, batch_sharding)
  step = jitted.lower(abstract_state, abstract_batch, key, frozen_abstract).compile()
  return CompiledStep(config, task, abstract_state, state_shardings, frozen_shardings,
                      frozen_abstract, batch_sharding, key, jitted,
                      {_shape_key(abstract_batch): step})


def compile_fitting(config, mesh, rules, tokenizer, t5, abstract_key: bool = False) -> CompiledStep:
  """`compile_step`, with remat_policy 'auto' resolved to the least recomputation whose
  compiled step fits in the memory of the mesh's devices (training/remat_choice.py; a TPU
  slice's chips under --topology); the compiler's refusal of a program larger than memory is
  one error line saying what to change."""
  if config.task != "generator" or config.model.remat_policy != "auto":
    return memory.compile_within_memory(
        lambda: compile_step(config, mesh, rules, tokenizer, t5, abstract_key=abstract_key))
  made = {}

  def attempt(policy):
    made[policy] = compile_step(config, mesh, rules, tokenizer, t5, policy,
                                abstract_key=abstract_key)
    return made[policy].first

  choice = remat_choice.choose(attempt, remat_choice.device_memory_bytes(mesh.devices.flat[0]))
  cli.notice("%s", remat_choice.describe(choice))
  return made[choice.policy]  # the policies not chosen are dropped


def report_memory(compiled: CompiledStep, mesh, topology=None) -> dict:
  """The `--memory-report`: per-device memory of the compiled step against the device's
  memory, FLOPs, collectives and (on a TPU target) the cost model's time, printed and returned
  (training/compile_report.py)."""
  config = compiled.config
  result = compile_report.for_mesh(
      compiled.first, mesh, "train step", topology=topology,
      model_flops=compiled.task.flops_per_step, remat_policy=config.model.remat_policy,
      items_per_call=config.batch_size, peak_override=config.log.peak_tflops)
  print(result.format())
  return {"memory": result.memory, "remat_policy": config.model.remat_policy,
          "report": result.as_dict()}


def place_frozen(compiled: CompiledStep, tokenizer, mesh, rules):
  """(frozen networks the step reads, tokenizer for sample grids) on the devices, one copy of
  the tokenizer when the step reads it too."""
  task = compiled.task
  frozen = (jax.device_put(task.frozen, compiled.frozen_shardings)
            if task.frozen is not None else None)
  if tokenizer is None:
    return frozen, None
  if isinstance(task.frozen, tuple):
    return frozen, frozen[0]
  if task.frozen is tokenizer:
    return frozen, frozen
  return frozen, jax.device_put(tokenizer, rules_lib.param_shardings(tokenizer, mesh, rules))


def warn_about_samples(config, tokenizer, task: Task) -> None:
  """What the trainer's sample grids will not show, said before training starts."""
  if config.log.sample_every_steps and config.model.condition == "caption":
    logging.warning("log.sample_every_steps: the trainer's sample grids are drawn for class "
                    "models; sample a caption model with `python -m maskgil_jax.sample "
                    "--prompt ...`")
  elif config.log.sample_every_steps and tokenizer is None and config.task == "generator":
    logging.warning("log.sample_every_steps is set but there is no tokenizer.ckpt to turn "
                    "sampled codes into images: no sample grids")
  if len(task.buckets) > 1:
    cli.notice("aspect buckets %s: at most one compiled step each",
               ", ".join(f"{h}x{w}" for h, w in task.buckets))


def restore_or_init(config, workdir, compiled: CompiledStep, data_iter):
  """(checkpoint manager, state, first step): the newest readable checkpoint of `workdir`
  (the data iterator moved to its position), else a new state, optionally with the
  parameters of `config.ckpt.init_from`."""
  manager = checkpoints.make_manager(workdir / checkpoints.SUBDIR,
                                     every_steps=config.ckpt.every_steps, keep=config.ckpt.keep)
  found = checkpoints.restore_state(manager, compiled.abstract_state, data_iter,
                                    quarantine=True, restart_data=config.ckpt.restart_data)
  if found is not None:
    cli.notice("resumed from %s/%d", manager.directory, found[1])
    return manager, *found
  state = state_lib.create_sharded(compiled.task.init, compiled.state_shardings)
  if config.ckpt.init_from:
    params = checkpoints.restore_params(config.ckpt.init_from, compiled.abstract_state.params)
    ema = (jax.tree.map(lambda x: jnp.array(x, copy=True), params)
           if state.ema_params is not None else None)
    state = state.replace(params=params, ema_params=ema)
    cli.notice("parameters initialised from %s", config.ckpt.init_from)
  return manager, state, 0


@dataclasses.dataclass
class Run:
  """What the loop reads and writes besides the train state."""
  config: Any
  workdir: epath.Path
  mesh: Any
  compiled: CompiledStep
  data_iter: Any
  manager: Any
  frozen: Any
  tokenizer: Any
  replicated: Any
  logger: Any
  throughput: Any


def run_loop(run: Run, state, start: int, profile) -> tuple[int, dict, str, tuple | None]:
  """Steps start + 1 .. total: one step dispatched ahead of the host; metrics summed on the
  device and fetched at log steps only (their means over the interval are logged); samples
  and checkpoints at their intervals; a preemption saves and stops. Returns (last step,
  last logged means, how it stopped, (step, metrics) of the last step run)."""
  config, compiled, task = run.config, run.compiled, run.compiled.task
  interval, tracer = metrics_lib.IntervalMeans(), Profiler(profile, run.workdir)
  preemption = Preemption()
  previous, stopped, step, last = None, "done", start, {}
  cli.notice("training steps %d..%d of %s (batch %d)", start + 1, config.total_steps,
             config.task, config.batch_size)
  try:
    for step in range(start + 1, config.total_steps + 1):
      tracer.before(step)
      local = next(run.data_iter)
      if step == start + 1:
        check_batch(local, task.batch_for(tuple(local["image"].shape[1:3])) if task.batch_for
                    else task.batch)
      batch = mesh_lib.global_batch({k: local[k] for k in task.batch}, run.mesh)
      state, step_metrics = compiled.step_for(local)(state, batch, compiled.key, run.frozen)
      if previous is not None and bool(previous[1]["nonfinite"]):
        stopped = _nonfinite(previous, run.manager)
        break
      previous = (step, step_metrics)
      interval.add(step_metrics)
      tracer.after(step, step_metrics)
      run.logger.progress(step)
      if step == start + 1:
        jax.block_until_ready(step_metrics)
        run.throughput.mark(step)  # timing starts after the compilation of the first step
      if step % config.log.every_steps == 0 or step == config.total_steps:
        if not bool(step_metrics["nonfinite"]):
          last = interval.take()
          run.logger.scalars(step, {**metrics_lib.train_scalars(last),
                                    **run.throughput.measure(step)})
      if (config.log.sample_every_steps and run.tokenizer is not None
          and config.task == "generator" and config.model.condition == "class"
          and step % config.log.sample_every_steps == 0):
        _write_samples(config, state, run.tokenizer, step, run.workdir, run.logger,
                       run.replicated)
      preempted = preemption.reached(run.manager, step)
      checkpoints.save(run.manager, step, state, config, run.data_iter, force=preempted)
      if preempted:
        cli.notice("preemption: checkpoint saved at step %d; rerun the same command to resume",
                   step)
        stopped = "preempted"
        break
    else:
      if previous is not None and bool(previous[1]["nonfinite"]):
        stopped = _nonfinite(previous, run.manager)
    if stopped != "nonfinite" and run.manager.latest_step() != step:
      checkpoints.save(run.manager, step, state, config, run.data_iter, force=True)
  finally:
    tracer.close()
    preemption.restore()
    run.manager.wait_until_finished()
    run.manager.close()
    run.logger.close()
  return step, last, stopped, previous


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

    # 2.-4. the frozen networks the step reads, the task (model, optimizer, loss, step) and
    #    its step compiled with state, batch and frozen networks placed by logical axes (the
    #    state donated); remat_policy 'auto' compiles until a policy fits in device memory
    tokenizer = load_frozen_tokenizer(config, abstract_only=memory_report)
    t5 = load_frozen_t5(config, memory_report)
    if config.batch_size % mesh_lib.batch_shards(mesh):
      raise ConfigError(f"config.batch_size: {config.batch_size} does not split over the "
                        f"{mesh_lib.batch_shards(mesh)} data x fsdp shards")
    compiled = compile_fitting(config, mesh, rules, tokenizer, t5, abstract_key=memory_report)
    if memory_report:
      return report_memory(compiled, mesh, topology)
    config = compiled.config
    frozen, tokenizer = place_frozen(compiled, tokenizer, mesh, rules)
    warn_about_samples(config, tokenizer, compiled.task)

    # 5. data: this process's share of each global batch, a checkpointable iterator
    data_iter = data.make_pipeline(config.data, batch_size=config.batch_size, seed=config.seed,
                                   text=config.text)

    # 6. resume from the workdir, else initialise (optionally from other parameters)
    manager, state, start = restore_or_init(config, workdir, compiled, data_iter)

    # 7. the loop (log, sample, checkpoint)
    logger = metrics_lib.MetricsLogger(workdir, config.total_steps, config.log.every_steps)
    throughput = metrics_lib.Throughput(
        batch_size=config.batch_size, tokens_per_example=compiled.task.tokens_per_example,
        num_devices=mesh.size,
        flops_per_step=compiled.task.flops_per_step or _xla_flops(compiled.first, mesh.size),
        peak_tflops=flops_lib.peak_tflops(flops_lib.device_kind(), config.log.peak_tflops))
    run = Run(config, workdir, mesh, compiled, data_iter, manager, frozen, tokenizer, replicated,
              logger, throughput)
    step, last, stopped, previous = run_loop(run, state, start, profile)
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
  if (config.task != "generator" or config.model.condition != "caption"
      or config.data.text_features or not config.text.encoder or abstract_only):
    return None
  return loading.load_text_encoder(config.text.encoder, config.text,
                                   config.model.caption_dim).model


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
