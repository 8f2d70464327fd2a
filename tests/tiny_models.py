"""Tiny weights the tests make on the fly (no fixture holds a tokenizer of the tiny generator's
512 codes)."""
import jax
import numpy as np
from flax import nnx

from maskgil_jax import configlib
from maskgil_jax.interop import torch_io, vq_names
from maskgil_jax.models.vq import VQModel


def write_random_vq(path):
  """A tiny VQ with the tiny generator's 512 codes and random weights, saved as LlamaGen would
  (filled from shapes: building it eagerly takes far longer); returns `path`."""
  config = configlib.finalize(configlib.load_config("tiny"))
  abstract = nnx.eval_shape(lambda: VQModel(config.tokenizer, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  fill = lambda a: (rng.normal(0, 0.3, a.shape).astype(a.dtype)
                    if np.issubdtype(a.dtype, np.floating) else np.zeros(a.shape, a.dtype))
  torch_io.save_state_dict(vq_names.export_vq_state_dict(jax.tree.map(fill, abstract)), path)
  return path
