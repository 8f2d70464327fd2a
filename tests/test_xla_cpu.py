"""The tokenizer's XLA:CPU options (maskgil_jax.xla_cpu): used by its jitted entry points on
CPU, accepted by this jaxlib, switched off by the environment, and harmless inside other
jitted functions."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maskgil_jax import xla_cpu
from maskgil_jax.configlib import tokenizer_config
from maskgil_jax.decode import tokens_to_images
from maskgil_jax.models import vq


@pytest.fixture(scope="module")
def tiny():
  t = tokenizer_config("tiny")
  t.update(dict(ch=32, z_channels=32, enc_res_blocks=1, dec_res_blocks=1, codebook_size=16))
  return vq.VQModel(t, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))


def ynn_convolutions(hlo: str) -> int:
  """How many YNNPACK fusions of a compiled program hold a convolution."""
  bodies, name = {}, None
  for line in hlo.splitlines():
    if line.startswith("%") and line.rstrip().endswith("{"):
      name = line[1:].split(" ")[0]
      bodies[name] = []
    elif line.startswith("}"):
      name = None
    elif name is not None:
      bodies[name].append(line)
  callees = re.findall(r"calls=%([\w.\-]+)[^\n]*__ynn_fusion", hlo)
  return sum(any("convolution(" in l for l in bodies.get(c, ())) for c in callees)


def test_options_on_cpu_only_and_the_switches(monkeypatch):
  monkeypatch.delenv(xla_cpu.OPT_OUT_VARIABLE, raising=False)
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
  assert xla_cpu.options_for("cpu") == xla_cpu.CONV_NET_OPTIONS
  assert xla_cpu.options_for("gpu") == {} and xla_cpu.options_for("tpu") == {}
  monkeypatch.setenv(xla_cpu.OPT_OUT_VARIABLE, "0")
  assert xla_cpu.options_for("cpu") == {}
  monkeypatch.delenv(xla_cpu.OPT_OUT_VARIABLE)
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot")
  assert xla_cpu.options_for("cpu") == {}  # the user's own setting stays in charge


def test_the_tokenizer_compiles_with_them_and_gives_the_same_codes(tiny, monkeypatch):
  monkeypatch.delenv(xla_cpu.OPT_OUT_VARIABLE, raising=False)
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1, maxval=1)
  tuned = vq.reconstruct.lower(tiny, images).compile()  # this jaxlib accepts the options
  assert ynn_convolutions(tuned.as_text()) == 0
  codes, recon = vq.reconstruct(tiny, images)
  plain_codes, plain_recon = vq.reconstruct.plain(tiny, images)
  np.testing.assert_array_equal(codes, plain_codes)
  np.testing.assert_allclose(recon, plain_recon, atol=1e-5, rtol=0)
  monkeypatch.setenv(xla_cpu.OPT_OUT_VARIABLE, "0")
  assert vq.reconstruct.lower(tiny, images).compile().as_text() == (
      vq.reconstruct.plain.lower(tiny, images).compile().as_text())


def test_inside_another_jit_the_outer_compilation_decides(tiny):
  images = jax.random.uniform(jax.random.key(2), (1, 32, 32, 3), minval=-1, maxval=1)
  codes = vq.encode(tiny, images)
  traced = jax.jit(lambda m, x: vq.encode(m, x))(tiny, images)  # traced arguments
  closed = jax.jit(lambda: vq.encode(tiny, images))()  # concrete arguments, under a trace
  np.testing.assert_array_equal(traced, codes)
  np.testing.assert_array_equal(closed, codes)
  pixels = tokens_to_images(tiny, codes.reshape(1, -1))
  assert pixels.shape == (1, 32, 32, 3) and pixels.dtype == jnp.uint8
  nested = jax.jit(lambda m, c: tokens_to_images(m, c))(tiny, codes.reshape(1, -1))
  # compiled with XLA's defaults there: another convolution kernel, so a pixel may round the
  # other way
  np.testing.assert_allclose(np.asarray(nested, np.int32), np.asarray(pixels, np.int32),
                             atol=1, rtol=0)
