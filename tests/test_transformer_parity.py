"""The transformer reproduces the reference PyTorch GPTs (fixtures made with their code)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maskgil_jax import configlib
from maskgil_jax.interop import gpt_names, names, torch_io
from maskgil_jax.models.transformer import Transformer


def load(layout, path):
  c = configlib.finalize(configlib.load_config(f"tiny:{layout}"))
  abstract = nnx.eval_shape(lambda: Transformer(c.model, rngs=nnx.Rngs(0)))
  sd = torch_io.load_state_dict(path)
  return names.import_state_dict(abstract, sd, gpt_names.gpt_rules(c.model), source=str(path))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_llamagen_teacher_forced_logits(fixtures_dir, suffix):
  model = load("llamagen", fixtures_dir / f"llamagen_gpt_tiny{suffix}")
  io = np.load(fixtures_dir / "llamagen_gpt_tiny_io.npz")
  idx = jnp.asarray(io["idx"], jnp.int32)
  fwd = jax.jit(lambda m, t, l: m.ar_logits(t, l))
  logits = fwd(model, idx, jnp.asarray(io["cond_idx"], jnp.int32))
  np.testing.assert_allclose(logits, io["logits_tf"], atol=1e-4, rtol=0)
  null = fwd(model, idx, jnp.full((2,), 10, jnp.int32))
  np.testing.assert_allclose(null, io["logits_tf_null"], atol=1e-4, rtol=0)
  loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), idx[..., None], -1))
  assert abs(float(loss) - float(io["loss_tf"])) < 1e-5


def test_maskgil_reference_logits(fixtures_dir):
  model = load("maskgil_reference", fixtures_dir / "maskgil_gpt_tiny.pt")
  io = np.load(fixtures_dir / "maskgil_gpt_tiny_io.npz")
  tokens = jnp.asarray(io["masked_code"].reshape(2, 16), jnp.int32)
  labels = jnp.asarray(io["labels"], jnp.int32)
  fwd = jax.jit(lambda m, t, l: m(t, l, mode="bidirectional"))
  # all 17 slots (16 image tokens, then the class token), as the fixture stores them
  np.testing.assert_allclose(fwd(model, tokens, labels), io["logits_cond"], atol=1e-4, rtol=0)
  null = jnp.full((2,), 10, jnp.int32)
  np.testing.assert_allclose(fwd(model, tokens, null), io["logits_uncond"], atol=1e-4, rtol=0)
  image = jax.jit(lambda m, t, l: m.mar_logits(t, l))(model, tokens, labels)
  np.testing.assert_allclose(image, io["logits_cond"][:, :16], atol=1e-4, rtol=0)


def test_wrong_checkpoint_names_every_problem(fixtures_dir):
  with pytest.raises(torch_io.CheckpointError) as e:
    load("llamagen", fixtures_dir / "maskgil_gpt_tiny.pt")
  msg = str(e.value)
  assert "missing tok_embeddings.weight" in msg and "unexpected tok_emb.weight" in msg
  assert "mis-shaped output.weight: file [513, 64], expected [512, 64]" in msg
