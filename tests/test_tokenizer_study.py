"""Generators on any tokenizer: a generator config names its tokenizer and its vocabulary and
grid follow; a tiny MaskGIL trains a few steps on codes from each family of the study."""
import jax
import numpy as np
import pytest

from maskgil_jax import configlib, loading
from maskgil_jax.data.demo_set import demo_images
from maskgil_jax.models.vq import encode

FAMILIES = {"tiny_taming": "taming_vqgan_tiny.pt",
            "tiny_chameleon": "chameleon_vqgan_tiny.safetensors",
            "tiny_magvit2": "open_magvit2_tiny.safetensors"}


@pytest.mark.parametrize("study,codes,grid", [
    ("maskgil_b,vq16", 16384, 16), ("maskgil_b,maskgit", 1024, 16),
    ("llamagen_b,chameleon", 8192, 16), ("llamagen_b,magvit2", 2 ** 18, 16)])
def test_study_configs_take_their_vocabulary_from_the_tokenizer(study, codes, grid):
  c = configlib.finalize(configlib.load_config(f"configs/tokenizer_study.py:{study}"))
  assert c.model.codebook_size == c.tokenizer.codebook_size == codes
  assert c.model.grid_size == grid
  assert c.objective.name == ("mar" if study.startswith("maskgil") else "ar")


@pytest.mark.parametrize("preset", sorted(FAMILIES))
def test_tiny_generator_trains_on_codes_of_each_family(fixtures_dir, preset):
  """The trainer's own MAR step (tasks.generator_task) on codes the family's tokenizer made."""
  from maskgil_jax.training import tasks
  c = configlib.load_config("tiny")
  c.tokenizer = configlib.tokenizer_config(preset)
  c.model.codebook_size = c.tokenizer.codebook_size
  c.data.name, c.data.image_size = "codes", 32
  c = configlib.finalize(c)
  assert c.model.grid_size == 8  # 32 px through a factor-4 tokenizer
  tokenizer = loading.load_tokenizer(fixtures_dir / FAMILIES[preset], c.tokenizer)
  images, labels = demo_images("test", image_size=32)
  codes = np.asarray(encode(tokenizer, jax.numpy.asarray(images[:c.batch_size])))
  assert codes.shape == (c.batch_size, 8, 8) and codes.max() < c.tokenizer.codebook_size
  task = tasks.generator_task(c, None)
  assert task.batch["codes"][0] == codes.shape
  state = task.init()
  assert state.params.output.weight.shape[-1] == c.tokenizer.codebook_size  # one logit per code
  step = jax.jit(task.step)
  batch = {"codes": jax.numpy.asarray(codes, jax.numpy.int32),
           "label": jax.numpy.asarray(labels[:c.batch_size], jax.numpy.int32)}
  losses = []
  for i in range(3):
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < losses[0]  # the same batch three times: it learns
