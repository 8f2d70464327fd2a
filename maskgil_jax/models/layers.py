"""The few parameterised pieces the transformers are built from: Linear, Embedding, RMSNorm,
and `stacked` (n copies of a block with parameters on a leading `layers` axis).

Weights are stored fp32 under the PyTorch reference's leaf name `weight` and cast to the compute
dtype where they are used; each carries the logical names of its axes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from maskgil_jax.parallel.rules import gather_for_use


def normal_init(key, shape, std: float, dtype=jnp.float32):
  return (std * jax.random.normal(key, shape)).astype(dtype)


class Linear(nnx.Module):
  """y = x @ W with W stored [in, out] (torch keeps [out, in]: the name table transposes)."""

  def __init__(self, d_in: int, d_out: int, axes: tuple[str, str], *, std: float = 0.02,
               zero: bool = False, param_dtype=jnp.float32, rngs: nnx.Rngs):
    value = (jnp.zeros((d_in, d_out), param_dtype) if zero
             else normal_init(rngs.params(), (d_in, d_out), std, param_dtype))
    self.weight = nnx.Param(value, out_sharding=axes)

  def __call__(self, x, dtype=None):
    w = gather_for_use(self.weight[...], self.weight.get_metadata().get("out_sharding"))
    dtype = dtype or x.dtype
    # one [rows, in] x [in, out] product: the weight gradient is then a plain x^T g over one
    # contracted axis. Contracting [B, T] against [B, T] (the 3-D form) made XLA:CPU copy g
    # transposed ([out, B*T]) before every weight-gradient product of the train step
    lead = x.shape[:-1]
    y = jnp.dot(x.reshape(-1, x.shape[-1]).astype(dtype), w.astype(dtype),
                preferred_element_type=dtype)
    return y.reshape(lead + (w.shape[-1],))


class Embedding(nnx.Module):
  def __init__(self, rows: int, dim: int, *, std: float = 0.02, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.weight = nnx.Param(normal_init(rngs.params(), (rows, dim), std, param_dtype),
                            out_sharding=("vocab", "embed"))

  def __call__(self, ids, dtype=jnp.float32):
    w = gather_for_use(self.weight[...], self.weight.get_metadata().get("out_sharding"))
    return jnp.take(w, ids, axis=0).astype(dtype)


class RMSNorm(nnx.Module):
  """x / rms(x) * weight, computed in fp32 and returned in the input dtype (as LlamaGen)."""

  def __init__(self, dim: int, eps: float = 1e-5, axis_name: str = "norm",
               param_dtype=jnp.float32):
    self.eps = eps
    self.weight = nnx.Param(jnp.ones((dim,), param_dtype), out_sharding=(axis_name,))

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed.astype(x.dtype) * self.weight[...].astype(x.dtype))


def stacked(make_block, n: int, rngs: nnx.Rngs):
  """n blocks `make_block(rngs)` with every parameter stacked on a leading `layers` axis (its
  logical names gain a leading 'layers'), one independent init key per block."""
  keys = jax.random.split(rngs.params(), n)
  blocks = jax.vmap(lambda k: make_block(nnx.Rngs(params=k)))(keys)
  return jax.tree.map(
      lambda v: v.replace(out_sharding=("layers",) + tuple(v.get_metadata()["out_sharding"])),
      blocks, is_leaf=lambda x: isinstance(x, nnx.Variable))
