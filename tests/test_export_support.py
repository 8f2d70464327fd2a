"""Helpers shared by the interop tests (test_convert, test_export, test_torch_model): tiny
configs and models whose every parameter is random and non-zero, so no comparison passes by
zeros (LlamaGen zero-initialises the output layer).
This file holds no tests."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maskgil_jax import checkpoints, configlib
from maskgil_jax.interop import names
from maskgil_jax.models.transformer import Transformer
from maskgil_jax.models.vq import VQModel

FIXTURE_KINDS = {  # fixture stem: (convert kind, config spec, export layout)
    "llamagen_gpt_tiny": ("llamagen-c2i", "tiny:llamagen", "llamagen"),
    "maskgil_gpt_tiny": ("maskgil-reference", "tiny:maskgil_reference", "maskgil-reference"),
    "llamagen_vq_tiny": ("vq16", "tiny", "llamagen"),
}


def tiny_config(spec: str = "tiny:maskgil", overrides=None):
  """A finalized tiny config; for the VQ fixture the tokenizer preset 'tiny' (64 codes)."""
  config = configlib.load_config(spec, overrides)
  return configlib.finalize(config)


def vq_fixture_config():
  config = configlib.load_config("tiny")
  config.tokenizer = configlib.tokenizer_config("tiny")
  config.model.codebook_size = config.tokenizer.codebook_size
  return configlib.finalize(config)


def config_for_fixture(stem: str):
  return vq_fixture_config() if stem == "llamagen_vq_tiny" else tiny_config(FIXTURE_KINDS[stem][1])


def random_module(make, seed: int = 0):
  """The module `make()` builds, with the fixtures' recipe drawn by numpy (no XLA compile):
  norm weights 1 + 0.1 N(0, 1), biases 0.1 N(0, 1), everything else N(0, 0.02); other
  Variables (the VQ usage window) are zeros."""
  rng = np.random.default_rng(seed)

  def draw(path, v):
    if not isinstance(v, nnx.Param):
      return v.replace(jnp.zeros(v.shape, v.dtype))
    name = names.path_str(path)
    z = rng.standard_normal(v.shape)
    if name.endswith("bias"):
      a = 0.1 * z
    elif "norm" in name.split(".")[-2]:
      a = 1.0 + 0.1 * z
    else:
      a = 0.02 * z
    return v.replace(jnp.asarray(a, v.dtype))

  return jax.tree_util.tree_map_with_path(draw, nnx.eval_shape(make),
                                          is_leaf=lambda x: isinstance(x, nnx.Variable))


def random_transformer(config, seed: int = 0) -> Transformer:
  return random_module(lambda: Transformer(config.model, rngs=nnx.Rngs(0)), seed)


def random_tokenizer(config, seed: int = 0) -> VQModel:
  return random_module(lambda: VQModel(config.tokenizer, rngs=nnx.Rngs(0)), seed)


def tokenizer_run_config(config):
  c = config.copy_and_resolve_references()
  c.task = "tokenizer"
  return c


def save_run(directory, module, config, step: int = 0):
  """A checkpoint in the trainer's layout, as `train` or `convert` leave it."""
  checkpoints.save_params(directory, module, config, step=step)
  return directory


def assert_same_state_dict(expected: dict, actual: dict, ordered: bool = True):
  """Same keys (in the same order when `ordered`), dtypes, shapes and bits."""
  assert set(actual) == set(expected), (sorted(set(expected) ^ set(actual)))
  if ordered:
    assert list(actual) == list(expected)
  for k, v in expected.items():
    assert actual[k].dtype == v.dtype and actual[k].shape == v.shape, k
    np.testing.assert_array_equal(actual[k], v, err_msg=k)
