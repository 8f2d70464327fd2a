"""Rematerialisation policies by name (config.model.remat_policy).

'auto' (the default) is resolved by the trainer to the cheapest policy whose compiled step fits
in device memory (training/remat_choice.py) before the model is built; a model built from an
unresolved 'auto' elsewhere (inference, tools, tests) uses AUTO_FALLBACK, which is safe for
memory (and costs nothing where no gradient is taken).
"""
from __future__ import annotations

import jax

POLICIES = {
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}
AUTO_FALLBACK = "nothing_saveable"


def remat(fn, policy: str):
  """`fn` under jax.checkpoint with the named policy; 'none' leaves it as it is."""
  if policy == "auto":
    policy = AUTO_FALLBACK
  if policy == "none":
    return fn
  return jax.checkpoint(fn, policy=POLICIES[policy])
