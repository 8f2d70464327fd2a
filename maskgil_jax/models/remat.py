"""Rematerialisation policies by name (config.model.remat_policy)."""
from __future__ import annotations

import jax

POLICIES = {
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}


def remat(fn, policy: str):
  """`fn` under jax.checkpoint with the named policy; 'none' leaves it as it is."""
  if policy == "none":
    return fn
  return jax.checkpoint(fn, policy=POLICIES[policy])
