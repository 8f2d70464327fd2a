"""XLA:CPU compiler options for the convolutional networks (the tokenizers), on by default.

XLA:CPU (jax 0.10) hands matrix products, convolutions and reductions to YNNPACK. For the VQ
tokenizer its convolutions are slower than XLA's own (Eigen), and GroupNorm's statistics, taken
by YNNPACK reductions, make XLA write `x + bias` and `x - mean` to memory before each of them
where its own reductions read them in the same loop. VQ-16 encode + decode of 4 images at
256 px on this project's 2-core CPU: 10.9 s with the defaults, 10.1 s with XLA's convolutions,
10.3 s with XLA's reductions, 9.5 s with both (docs/performance.md).

`jit` is `jax.jit` for the tokenizer's entry points (`models.vq.encode`, `decode`,
`reconstruct`, `decode.images.tokens_to_images`): on a CPU backend it compiles with
`CONV_NET_OPTIONS` (YNNPACK keeps the matrix products; convolutions and reductions go back to
XLA); elsewhere, and when called inside another traced function (whose own compilation
decides), it is plain `jax.jit`. The generators keep XLA's defaults: the same options made
MaskGIL sampling about 5% slower (its softmax reductions are faster in YNNPACK).

Opt out with the environment variable `MASKGIL_JAX_XLA_CPU_TUNING=0`; a user's own
`--xla_cpu_experimental_ynn_fusion_type` in `XLA_FLAGS` is left in charge as well.
"""
from __future__ import annotations

import functools
import os

import jax

OPT_OUT_VARIABLE = "MASKGIL_JAX_XLA_CPU_TUNING"
_YNN_FIELD = "xla_cpu_experimental_ynn_fusion_type"
# one value of the repeated field: YNNPACK keeps matrix products only
CONV_NET_OPTIONS = {_YNN_FIELD: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def enabled() -> bool:
  """Whether the tuned options apply: not opted out, and XLA_FLAGS leave the field alone."""
  if os.environ.get(OPT_OUT_VARIABLE, "1").strip().lower() in ("0", "false", "no", "off"):
    return False
  return _YNN_FIELD not in os.environ.get("XLA_FLAGS", "")


def options_for(platform: str) -> dict:
  """The compiler options `jit` uses on `platform` ('cpu', 'gpu', 'tpu')."""
  return dict(CONV_NET_OPTIONS) if platform == "cpu" and enabled() else {}


def _traced(tree) -> bool:
  return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def jit(fun=None, **jit_kwargs):
  """`jax.jit(fun, **jit_kwargs)`, compiled with `options_for(jax.default_backend())` when
  called at the top level. Usable as `@jit` or `@jit(static_argnames=...)`; `.lower`,
  `.eval_shape` and `._cache_size` work as on a jitted function; `.plain` is the untuned
  `jax.jit`."""
  if fun is None:
    return functools.partial(jit, **jit_kwargs)
  plain = jax.jit(fun, **jit_kwargs)
  tuned = {}

  def pick():
    options = options_for(jax.default_backend())
    if not options:
      return plain
    key = tuple(sorted(options.items()))
    if key not in tuned:
      tuned[key] = jax.jit(fun, compiler_options=options, **jit_kwargs)
    return tuned[key]

  @functools.wraps(fun)
  def call(*args, **kwargs):
    if _traced((args, kwargs)):
      return plain(*args, **kwargs)  # inside another trace: its compilation decides
    chosen = pick()
    if chosen is plain:
      return plain(*args, **kwargs)
    try:
      return chosen(*args, **kwargs)
    except ValueError as e:  # concrete arguments, but called while tracing something else
      if "compiler_options" not in str(e):
        raise
      return plain(*args, **kwargs)

  call.lower = lambda *args, **kwargs: pick().lower(*args, **kwargs)
  call.eval_shape = plain.eval_shape
  call.plain = plain
  call._cache_size = lambda: plain._cache_size() + sum(t._cache_size() for t in tuned.values())
  return call
