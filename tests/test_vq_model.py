"""The VQ tokenizer network: sizes, shapes and dtypes, straight-through gradients, config checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maskgil_jax.configlib import ConfigError, tokenizer_config
from maskgil_jax.models import vq


def rngs(seed=0):
  """RBG keys: the same initialisers, much cheaper to compile on CPU than threefry."""
  return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def small_config(**overrides):
  """The tiny preset shrunk further so CPU compiles stay short."""
  t = tokenizer_config("tiny")
  t.update(dict(ch=32, z_channels=32, enc_res_blocks=1, dec_res_blocks=1, codebook_size=16))
  t.update(overrides)
  return t


@pytest.mark.parametrize("preset,params", [("vq16", 71_883_403), ("tiny", 3_812_423),
                                           ("vq16_c262144", 71_883_403 + (262_144 - 16_384) * 8)])
def test_parameter_counts(preset, params):
  abstract = nnx.eval_shape(lambda: vq.VQModel(tokenizer_config(preset), rngs=nnx.Rngs(0)))
  assert vq.count_params(abstract) == params


def test_full_size_shapes_without_computing():
  m = nnx.eval_shape(lambda: vq.VQModel(tokenizer_config("vq16"), rngs=nnx.Rngs(0)))
  x = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
  codes = jax.eval_shape(lambda m, x: m.encode(x), m, x)
  assert (codes.shape, codes.dtype) == ((2, 16, 16), jnp.int32)
  recon, aux = jax.eval_shape(lambda m, x: m(x), m, x)
  assert recon.shape == (2, 256, 256, 3) and aux["codebook_used"].shape == (65536,)


@pytest.fixture(scope="module")
def small_model():
  return vq.VQModel(small_config(), rngs=rngs())


@pytest.mark.parametrize("size", [(16, 16), (24, 40)])
def test_any_multiple_of_the_downsampling_factor(small_model, size):
  x = jax.random.uniform(jax.random.key(0), (3, *size, 3), minval=-1, maxval=1)
  codes, recon = vq.reconstruct(small_model, x)
  assert codes.shape == (3, size[0] // 2, size[1] // 2) and codes.dtype == jnp.int32
  assert recon.shape == x.shape and recon.dtype == jnp.float32
  assert int(codes.min()) >= 0 and int(codes.max()) < 16


def test_bfloat16_compute_and_lfq():
  m = vq.VQModel(small_config(dtype="bfloat16", kind="lfq", codebook_size=64, codebook_dim=6,
                              l2_norm=False, entropy_loss=0.1), rngs=rngs())
  assert m.encoder.conv_in.weight[...].dtype == jnp.float32  # parameters stay float32
  x = jnp.zeros((1, 16, 16, 3))
  recon, aux = jax.jit(lambda m, x: m(x))(m, x)
  assert recon.dtype == jnp.float32 and aux["indices"].shape == (1, 8, 8)
  assert all(np.isfinite(float(aux[k])) for k in ("commit_loss", "entropy_loss"))


def test_bad_images_are_refused(small_model):
  with pytest.raises(ValueError, match="not a multiple of the downsampling factor 2"):
    small_model.encode(jnp.zeros((1, 15, 16, 3)))
  with pytest.raises(ValueError, match="NHWC RGB"):
    small_model.encode(jnp.zeros((1, 3, 16, 16)))


def test_straight_through_gradients_reach_the_encoder(small_model):
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-1, maxval=1)
  probe = jax.random.normal(jax.random.key(2), (2, 8, 8, 4))  # stands in for the decoder

  def terms(m):
    quant, aux = m.quantized(x)
    return jnp.stack([jnp.sum(quant * probe), aux["vq_loss"], aux["commit_loss"]])

  pull = jax.jit(lambda m, ct: jax.vjp(terms, m)[1](ct)[0])  # one compile for all three terms
  grads = [pull(small_model, ct) for ct in jnp.eye(3)]
  enc = [float(jnp.abs(g.encoder.conv_in.weight[...]).max()) for g in grads]
  book = [float(jnp.abs(g.quantize.embedding.weight[...]).max()) for g in grads]
  # what the decoder asks of the quantised latents reaches the encoder only by straight-through
  # vq_loss: moves the codebook, not the encoder; commit_loss: the encoder, not the codebook
  np.testing.assert_array_equal(np.asarray(enc) > 0, [True, False, True])
  np.testing.assert_array_equal(np.asarray(book) > 0, [False, True, False])


def test_dropout_follows_the_key_through_remat():
  x = jax.random.uniform(jax.random.key(2), (1, 16, 16, 3), minval=-1, maxval=1)
  run = jax.jit(lambda m, k: m(x, k)[0])
  m = vq.VQModel(small_config(dropout=0.5), rngs=rngs())
  r = vq.VQModel(small_config(dropout=0.5, remat=True), rngs=rngs())
  key = lambda seed: jax.random.key(seed, impl="rbg")
  a, b = run(m, key(0)), run(m, key(1))
  assert float(jnp.abs(a - b).max()) > 1e-3
  np.testing.assert_allclose(run(r, key(0)), a, atol=1e-6)


def test_record_usage_returns_a_new_model(small_model):
  window = jnp.arange(65536, dtype=jnp.float32) % 16
  new = vq.record_usage(small_model, window)
  assert float(jnp.abs(small_model.quantize.codebook_used[...]).max()) == 0
  np.testing.assert_array_equal(new.quantize.codebook_used[...], window)


@pytest.mark.parametrize("field,value,message", [
    ("kind", "fsq", "one of"), ("ch", 48, "divisible by the 32 GroupNorm groups"),
    ("codebook_dim", 5, "codebook_size == 2 \\*\\* codebook_dim")])
def test_config_errors_name_the_field(field, value, message):
  overrides = {field: value}
  if field == "codebook_dim":
    overrides.update(kind="lfq", l2_norm=False, codebook_size=64)
  with pytest.raises(ConfigError, match=f"config.tokenizer.{field}: .*{message}"):
    vq.VQModel(small_config(**overrides), rngs=rngs())


def test_upsample_is_the_3x3_conv_of_the_nearest_neighbour_map():
  """The four-phase form (no upsampled map built) gives the conv of the upsampled map, values
  and gradients, on odd and non-square sides and without a bias."""
  from maskgil_jax.models.layers_conv import Upsample
  up = Upsample(8, rngs=rngs())
  x = jax.random.normal(jax.random.key(1), (2, 5, 3, 8))
  nearest = lambda m, x: m.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))
  np.testing.assert_allclose(up(x), nearest(up, x), atol=1e-5, rtol=0)
  loss = lambda f: lambda m, x: jnp.sum(jnp.sin(f(m, x)))
  ours = jax.grad(loss(lambda m, x: m(x)), argnums=(0, 1))(up, x)
  theirs = jax.grad(loss(nearest), argnums=(0, 1))(up, x)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)
  up.conv.bias = None
  np.testing.assert_allclose(up(x), nearest(up, x), atol=1e-5, rtol=0)
