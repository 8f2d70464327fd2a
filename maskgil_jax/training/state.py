"""The train state, created directly in its final sharding.

`TrainState.params` is the whole module (a pytree of its Variables); the optimizer sees only its
`nnx.Param`s, so buffers such as the tokenizer's codebook-usage window travel with the model but
are never updated by gradients. Because the optimizer moments are copies of the Params, they
carry the same logical axis names and shard exactly like them (FSDP shards the moments too).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from jax.sharding import Mesh

from maskgil_jax.parallel.rules import param_shardings


@struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer updates done
  params: Any  # the module being trained
  opt_state: Any
  ema_params: Any = None  # EMA of the module (config.optim.ema_decay > 0)
  disc_params: Any = None  # tokenizer task: the PatchGAN discriminator ...
  disc_opt_state: Any = None  # ... and its own optimizer state


def trainable(module) -> nnx.State:
  return nnx.state(module, nnx.Param)


def init_train_state(module, tx: optax.GradientTransformation, *, ema: bool = False,
                     disc=None, disc_tx: optax.GradientTransformation | None = None) -> TrainState:
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=module, opt_state=tx.init(trainable(module)),
      ema_params=jax.tree.map(jnp.copy, module) if ema else None,
      disc_params=disc, disc_opt_state=disc_tx.init(trainable(disc)) if disc is not None else None)


def with_shardings(abstract, shardings):
  """ShapeDtypeStructs of `abstract` that carry `shardings` (targets for restore and compile)."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


def abstract_sharded(init_fn: Callable[[], Any], mesh: Mesh, rules) -> tuple[Any, Any]:
  """(abstract state carrying its shardings, the shardings) of `init_fn()`; creates nothing."""
  abstract = jax.eval_shape(init_fn)
  shardings = param_shardings(abstract, mesh, rules)
  return with_shardings(abstract, shardings), shardings


def create_sharded(init_fn: Callable[[], Any], shardings):
  """`init_fn()` with every array created on its own shard (`jit` with out_shardings), so the
  full model never has to fit on one device."""
  return jax.jit(init_fn, out_shardings=shardings)()
