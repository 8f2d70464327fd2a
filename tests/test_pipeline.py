"""The Python API: `pipeline.load` + `generate` draw what the sample command draws, reuse their
compiled programs, accept class names and prompts, and name every bad argument."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskgil_jax import pipeline
from maskgil_jax.configlib import ConfigError
from maskgil_jax.decode import generate_tokens, sample_grid, tokens_to_images
from tiny_models import write_random_vq

NAMES = [f"class {c}" for c in "abcdefghij"]


@pytest.fixture(scope="module")
def pipe(fixtures_dir, tmp_path_factory):
  vq = write_random_vq(tmp_path_factory.mktemp("vq") / "vq_tiny.pt")
  return pipeline.load(fixtures_dir / "maskgil_gpt_tiny.safetensors", config="tiny:maskgil_reference",
                       tokenizer=vq, class_names=NAMES)


def compiled():
  return (generate_tokens._cache_size(), tokens_to_images._cache_size(),
          pipeline.sample_keys._cache_size())


def test_generate_draws_the_sample_commands_images_and_compiles_once(pipe):
  images, tokens = pipe.generate(labels=[0, 1, 2, 3], steps=4, seed=0, return_tokens=True)
  assert images.shape == (4, 8, 8, 3) and images.dtype == np.uint8
  assert tokens.shape == (4, 4, 4) and tokens.dtype == np.int32
  # sample i's key is fold_in(PRNGKey(seed), i), as in the sample command and sample_grid
  config = pipe.config.copy_and_resolve_references()
  config.decode.steps = 4
  keys = pipeline.sample_keys(jax.random.PRNGKey(0), jnp.arange(4))
  np.testing.assert_array_equal(images, sample_grid(pipe.model, pipe.tokenizer, jnp.arange(4),
                                                    keys, config))

  before = compiled()
  again = pipe.generate(labels=["class a", "CLASS B", "2", 3], steps=4, seed=0)
  np.testing.assert_array_equal(again, images)  # names, digits and ids are the same classes
  other = pipe.generate(labels=[4, 5, 6], steps=4, seed=1, cfg_scale=1.5, temperature=0.5)
  assert other.shape == (3, 8, 8, 3)
  assert compiled() == before  # same shape: traced settings and padding reuse the programs


def test_a_sample_does_not_depend_on_the_batch_it_was_drawn_in(pipe):
  whole = pipe.generate(labels=[7, 1, 4, 4, 9], seed=3, temperature=0.7)  # one batch of 8
  pipe.batch_size = 2
  try:
    assert pipe.batch_for(5) == 2
    np.testing.assert_array_equal(pipe.generate(labels=[7, 1, 4, 4, 9], seed=3,
                                                temperature=0.7), whole)
    parts = list(pipe.stream([7, 1, 4, 4, 9], seed=3, temperature=0.7))
  finally:
    pipe.batch_size = 16
  assert [len(i) for i, _ in parts] == [2, 2, 1]  # streamed as each batch finishes
  np.testing.assert_array_equal(np.concatenate([i for i, _ in parts]), whole)


@pytest.mark.parametrize("kwargs, message", [
    (dict(labels=["class z"]), "unknown class 'class z'; one of class a, class b"),
    (dict(labels=[10]), "class 10; classes are 0..9"),
    (dict(labels=[]), "labels: none given"),
    (dict(labels=[1], steps=0), "config.decode.steps"),
    (dict(labels=[1], temperature=-1), "config.decode.temperature"),
    (dict(labels=[1], cfg_scale=float("nan")), "config.decode.cfg_scale: must be a finite"),
    (dict(labels=[1], cfg_scale=float("-inf")), "config.decode.cfg_scale: must be a finite"),
    (dict(labels=[1], ar_cfg_scale=float("inf")), "config.decode.ar_cfg_scale: must be a fin"),
    (dict(labels=[1], decode="ar"), "--decode ar: layout 'maskgil_reference'"),
    (dict(labels=[1], decode="sideways"), "one of ('mar', 'ar', 'hybrid')"),
    (dict(labels=[1], height=5), "height 5: a positive multiple of the tokenizer's"),
    (dict(labels=[1], height=0), "height 0: a positive multiple of the tokenizer's"),
    (dict(labels=[1], width=0), "width 0: a positive multiple of the tokenizer's"),
    (dict(labels=[1], seed=2**70), "seed: an integer from -2**63 to 2**63 - 1, got 11805"),
    (dict(labels=[1], seed=1.5), "seed: an integer from -2**63"),
    (dict(labels=3.5), "labels: a list of class ids or names, got 3.5"),
    (dict(labels=[1], prompts=["a bag"]), "one of them"),
    (dict(prompts=["a bag"]), "class-conditional"),
])
def test_bad_arguments_are_named(pipe, kwargs, message):
  with pytest.raises(ConfigError) as e:
    pipe.generate(**kwargs)
  assert message in str(e.value)


def test_without_a_tokenizer_only_tokens(fixtures_dir):
  # the tiny config names the demo's data: its classes have the Fashion-MNIST names
  named = pipeline.load(fixtures_dir / "maskgil_gpt_tiny.safetensors", "tiny:maskgil_reference")
  assert named.class_names[7] == "Sneaker" and named.label_ids(["sneaker"]).tolist() == [7]
  pipe = pipeline.load(fixtures_dir / "maskgil_gpt_tiny.safetensors", "tiny:maskgil_reference",
                       overrides=["data.name=imagenet2012"])
  assert pipe.tokenizer is None and pipe.class_names is None and pipe.methods == ("mar",)
  images, tokens = pipe.generate(labels=[1, 2], return_tokens=True)
  assert images is None and tokens.shape == (2, 4, 4)
  with pytest.raises(ConfigError, match="images need a tokenizer"):
    pipe.generate(labels=[1, 2])
  with pytest.raises(ConfigError, match="unknown class 'shoe'; this model's classes go by number"):
    pipe.generate(labels=["shoe"], return_tokens=True)
  with pytest.raises(ConfigError, match="required with a PyTorch checkpoint"):
    pipeline.load(fixtures_dir / "maskgil_gpt_tiny.safetensors")


def test_prompts_give_llamagens_tokens(fixtures_dir):
  pipe = pipeline.load(fixtures_dir / "llamagen_gpt_t2i_tiny.safetensors", "tiny:llamagen_t2i",
                       text_encoder=fixtures_dir / "t5_encoder_tiny")
  io = np.load(fixtures_dir / "llamagen_gpt_t2i_tiny_io.npz")
  prompts = [str(p) for p in np.load(fixtures_dir / "t5_encoder_tiny_io.npz")["prompts"]]
  _, tokens = pipe.generate(prompts=prompts, decode="ar", temperature=0, cfg_scale=2,
                            return_tokens=True)
  np.testing.assert_array_equal(tokens.reshape(len(prompts), 16), io["tokens_s3"])
  with pytest.raises(ConfigError, match="empty prompt"):
    pipe.generate(prompts=["a bag", " "], decode="ar", return_tokens=True)
  with pytest.raises(ConfigError, match="text-to-image"):
    pipe.generate(labels=[1], decode="ar", return_tokens=True)
  with pytest.raises(ConfigError, match="prompts: each prompt is a string, got 3"):
    pipe.generate(prompts=["a bag", 3], decode="ar", return_tokens=True)
  with pytest.raises(ConfigError, match="prompts: a list of strings, got 3"):
    pipe.generate(prompts=3, decode="ar", return_tokens=True)
