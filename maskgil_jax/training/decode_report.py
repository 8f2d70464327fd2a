"""The sampling program compiled without weights: `sample --memory-report [--topology NAME]`
(beside compile_report.py, which reports on it as on the train step).

One call of the decoder (MAR, AR or hybrid, `decode.generate.generate_tokens`) over a global
batch, compiled for this host's devices or for a TPU slice ahead of time
(parallel/topology.py), with the model, labels or caption features and keys as shapes placed on
the mesh as the sample command places them. The report (training/compile_report.py) gives the
memory per chip, the FLOPs, the collectives and XLA's cost-model time (an ESTIMATE) per batch.

The hybrid's AR half is the same model here: the report is about the program's size and cost,
which do not depend on how the weights were trained.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from maskgil_jax.configlib import ConfigError
from maskgil_jax.decode.generate import METHODS, generate_tokens
from maskgil_jax.decode.sampling import DecodeSettings
from maskgil_jax.models.conditions import Caption
from maskgil_jax.parallel import mesh as mesh_lib
from maskgil_jax.parallel import rules as rules_lib
from maskgil_jax.parallel import topology as topology_lib
from maskgil_jax.loading import abstract_generator  # the loader's own placement
from maskgil_jax.training import compile_report


def describe(method: str, settings: DecodeSettings, batch_size: int) -> str:
  steps = {"mar": f"MAR-{settings.steps}", "ar": "AR",
           "hybrid": f"hybrid (AR {settings.ar_tokens} tokens, then MAR-{settings.steps})"}
  return f"{steps[method]} decode of {batch_size} samples"


def decode_report(config, method: str, batch_size: int, settings: DecodeSettings,
                  topology: topology_lib.Topology | None = None) -> compile_report.Report:
  """Compile one `method` call over a global batch of `batch_size` (rounded up to the mesh's
  batch shards) for `config` (finalized) and report on it."""
  if method not in METHODS:
    raise ConfigError(f"--decode {method!r}: one of {METHODS}")
  config = topology_lib.configure(config, topology)
  mesh = mesh_lib.make_mesh(config.mesh, topology.devices() if topology else None)
  rules = rules_lib.make_rules(config.mesh.get("rules"))
  shards = mesh_lib.batch_shards(mesh)
  batch = -(-batch_size // shards) * shards
  rows = mesh_lib.batch_sharding(mesh)
  replicated = NamedSharding(mesh, PartitionSpec())

  def shaped(shape, dtype, sharding=rows):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

  with jax.set_mesh(mesh), rules_lib.axis_rules(rules):
    model = abstract_generator(config.model, mesh, rules)
    if config.model.get("condition", "class") == "caption":
      p = config.model.cls_token_num
      cond = Caption(shaped((batch, p, config.model.caption_dim), jnp.float32),
                     shaped((batch, p), jnp.bool_), shaped((batch,), jnp.bool_))
    else:
      cond = shaped((batch,), jnp.int32)
    keys = shaped((batch, 2), jnp.uint32)
    abstract_settings = jax.tree.map(
        lambda x: shaped(np.shape(x), jnp.result_type(x), replicated), settings)
    compiled = generate_tokens.lower(model, cond, keys, abstract_settings, method).compile()
  return compile_report.for_mesh(compiled, mesh, describe(method, settings, batch),
                                 topology=topology, items_per_call=batch)
