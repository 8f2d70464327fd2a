"""`python -m maskgil_jax.params --config CONFIG [--config.a=b]`: parameter report.

Builds the model the config trains with `jax.eval_shape` (nothing is allocated, so the 1.4B
model reports on a laptop): the transformer, or the tokenizer for a tokenizer config
(`config.task = 'tokenizer'`, e.g. configs/vq16.py). Prints one row per parameter with its
logical axes, a subtotal per module, and `params: N` last.
"""
from __future__ import annotations


import jax
import numpy as np
from flax import nnx

from maskgil_jax import cli, configlib
from maskgil_jax.interop.names import path_str
from maskgil_jax.loading import abstract_generator, abstract_tokenizer



def report(model_config) -> tuple[list[str], int]:
  """Table rows and the total parameter count of the transformer for `config.model`."""
  return module_report(abstract_generator(model_config))


def tokenizer_report(tokenizer_config) -> tuple[list[str], int]:
  """Table rows and the total parameter count of the tokenizer for `config.tokenizer`
  (parameters only: LlamaGen's usage buffer is state, not a weight)."""
  return module_report(abstract_tokenizer(tokenizer_config))


def module_report(abstract) -> tuple[list[str], int]:
  """Table rows and the total parameter count of an abstract module."""
  variables = jax.tree_util.tree_flatten_with_path(
      nnx.state(abstract, nnx.Param), is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
  rows = [f"{'parameter':<44} {'shape':<20} {'logical axes':<34} {'count':>13}"]
  totals: dict[str, int] = {}
  for path, var in variables:
    name, shape = path_str(path), tuple(var.get_value().shape)
    n = int(np.prod(shape))
    module = ".".join(name.split(".")[:2 if name.startswith("layers.") else 1])
    totals[module] = totals.get(module, 0) + n
    axes = var.get_metadata().get("out_sharding")
    rows.append(f"{name:<44} {str(shape):<20} {str(axes):<34} {n:>13,}")
  rows += ["", f"{'module':<44} {'':<20} {'':<34} {'count':>13}"]
  rows += [f"{module:<44} {'':<20} {'':<34} {n:>13,}" for module, n in totals.items()]
  return rows, sum(totals.values())


def _main(argv) -> int:
  args = cli.Parser("params", __doc__.split("\n\n")[0], config="required").parse(argv)
  config = configlib.finalize(cli.load_config(args))
  if config.get("task", "generator") == "tokenizer":
    t = config.tokenizer
    rows, total = tokenizer_report(t)
    print(f"tokenizer: kind {t.kind}, {t.codebook_size} codes x {t.codebook_dim}, "
          f"preset {t.preset}, channels {t.ch}, ch_mult {tuple(t.ch_mult)}")
  else:
    m = config.model
    rows, total = report(m)
    print(f"model: size {m.size}, layout {m.layout}, {m.n_layer} layers, dim {m.dim}, "
          f"{m.n_head} heads, grid {m.grid_size}x{m.grid_size}, {m.codebook_size} codes")
  print("\n".join(rows))
  print(f"params: {total}")
  return 0


main = cli.entry(_main, __name__)  # last: run as a command, it runs here
