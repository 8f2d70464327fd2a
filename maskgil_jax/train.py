"""The trainer: `python -m maskgil_jax.train --config configs/x.py[:arg] --workdir DIR`.

  --config.a.b=value   override any config field     --memory-report   compile, print memory, exit
  --profile FIRST[:N]  trace N steps for TensorBoard  --compilation-cache DIR   reuse compilations

Parses the flags and runs `training.trainer.train` (the recipe, read top to bottom there).
"""
from __future__ import annotations

import jax

from maskgil_jax import cli, configlib
from maskgil_jax.parallel import mesh as mesh_lib
from maskgil_jax.parallel import topology as topology_lib
from maskgil_jax.training.trainer import check_config, prepare_workdir, train


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
  topology = topology_lib.from_args(args)  # a bad slice name before any work
  config = cli.load_config(args)
  check_config(configlib.finalize(config))  # a bad field is reported before anything is created
  if args.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
  mesh_lib.initialize_for(config.mesh)  # before JAX touches a device
  if not args.memory_report:
    workdir = prepare_workdir(args.workdir)
    if "://" not in args.workdir:  # a readable log beside the metrics (local workdirs)
      cli.setup_logging(str(workdir), "train")
  train(config, args.workdir, memory_report=args.memory_report, profile=profile,
        topology=topology)
  return 0


main = cli.entry(_main, __name__)  # last: run as a command, it runs here
