"""Behaviour of the one transformer: attention modes, layer scan, remat, RoPE, KV cache."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maskgil_jax import configlib
from maskgil_jax.models import rope
from maskgil_jax.models.layouts import Layout
from maskgil_jax.models.transformer import Transformer


def model(layout="maskgil", seed=0, **model_overrides):
  c = configlib.load_config(f"tiny:{layout}")
  c.model.update(model_overrides)
  m = Transformer(configlib.finalize(c).model, rngs=nnx.Rngs(seed))
  # the output layer starts at zero (LlamaGen); give it values so logits carry information
  w = m.output.weight
  w.set_value((0.02 * jax.random.normal(jax.random.key(seed + 1), w.get_value().shape)).astype(
      w.get_value().dtype))
  return m


TOKENS = jax.random.randint(jax.random.key(3), (2, 16), 0, 512)
LABELS = jnp.array([1, 7])


@pytest.mark.parametrize("layout", ["llamagen", "maskgil"])
def test_causal_ignores_future_bidirectional_does_not(layout):
  m = model(layout)
  changed = TOKENS.at[:, 10].set((TOKENS[:, 10] + 1) % 512)
  slot = m.layout.prefix_len + 10  # where the changed token sits in the sequence
  causal = jax.jit(lambda m, t: m(t, LABELS, mode="causal"))
  a, b = causal(m, TOKENS), causal(m, changed)
  np.testing.assert_array_equal(a[:, :slot], b[:, :slot])
  assert np.abs(a[:, slot:] - b[:, slot:]).max() > 1e-4
  bidir = jax.jit(lambda m, t: m(t, LABELS, mode="bidirectional"))
  a, b = bidir(m, TOKENS), bidir(m, changed)
  assert np.abs(a[:, :slot] - b[:, :slot]).max() > 1e-4


def test_scan_equals_unrolled():
  scanned = model("maskgil", scan_layers=True)
  unrolled = model("maskgil", scan_layers=False)
  assert all(np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(scanned), jax.tree.leaves(unrolled)))
  f = lambda m: m.mar_logits(TOKENS, LABELS)
  np.testing.assert_allclose(jax.jit(f)(scanned), jax.jit(f)(unrolled), atol=1e-6, rtol=0)


def test_remat_gives_equal_gradients():
  def grads(policy):
    m = model("maskgil", remat_policy=policy)
    loss = lambda m: jnp.mean(m.mar_logits(TOKENS, LABELS) ** 2)
    return jax.jit(jax.grad(loss))(m)
  plain, remat = grads("none"), grads("nothing_saveable")
  diffs = [float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat))]
  norms = [float(jnp.abs(a).max()) for a in jax.tree.leaves(plain)]
  assert max(diffs) < 1e-6 and max(norms) > 0


def test_2d_rope_scores_depend_only_on_relative_offsets():
  hd = 16
  q = jax.random.normal(jax.random.key(0), (1, 1, 1, hd))
  k = jax.random.normal(jax.random.key(1), (1, 1, 1, hd))

  def score(qpos, kpos):
    cq, sq = rope.table(rope.angles_2d(np.array([qpos[0]]), np.array([qpos[1]]), hd, 1e4),
                        np.ones(1))
    ck, sk = rope.table(rope.angles_2d(np.array([kpos[0]]), np.array([kpos[1]]), hd, 1e4),
                        np.ones(1))
    return float(jnp.sum(rope.apply(q, cq, sq) * rope.apply(k, ck, sk)))

  base = score((2, 3), (5, 1))
  assert abs(score((7, 9), (10, 7)) - base) < 1e-4  # same offset (3, -2)
  assert abs(score((2, 3), (1, 5)) - base) > 1e-3  # another offset
  # row and column offsets are distinct axes
  assert abs(score((0, 0), (0, 2)) - score((0, 0), (2, 0))) > 1e-3


@pytest.mark.parametrize("layout,kw", [("llamagen", {}), ("maskgil", {}),
                                       ("maskgil", {"n_kv_head": 2})])
def test_cached_decode_equals_full_forward(layout, kw):
  m = model(layout, **kw)
  full = jax.jit(lambda m: m.ar_logits(TOKENS, LABELS))(m)  # [B, 16, V]
  logits, cache = jax.jit(lambda m, c: m.decode(None, LABELS, c))(m, m.init_cache(2))
  np.testing.assert_allclose(logits[:, -1], full[:, 0], atol=1e-5, rtol=0)
  step = jax.jit(lambda m, t, c: m.decode(t, None, c))
  for j in range(5):  # one token at a time
    logits, cache = step(m, TOKENS[:, j:j + 1], cache)
    np.testing.assert_allclose(logits[:, 0], full[:, j + 1], atol=1e-5, rtol=0)
  logits, cache = step(m, TOKENS[:, 5:9], cache)  # a chunk of 4
  np.testing.assert_allclose(logits, full[:, 6:10], atol=1e-5, rtol=0)
  assert int(cache.length) == m.layout.prefix_len + 9


def test_dropout_only_with_a_key():
  m = model("maskgil", resid_dropout=0.1, ffn_dropout=0.1, token_dropout=0.1, attn_dropout=0.1)
  f = jax.jit(lambda m, k: m.mar_logits(TOKENS, LABELS, key=k))
  g = jax.jit(lambda m: m.mar_logits(TOKENS, LABELS))
  np.testing.assert_array_equal(g(m), g(m))
  a, b = f(m, jax.random.key(0)), f(m, jax.random.key(1))
  assert np.abs(a - b).max() > 1e-5
  np.testing.assert_array_equal(a, f(m, jax.random.key(0)))


def test_padding_mask_hides_padded_prefix_slots():
  m = model("maskgil")
  s = 17
  key_mask = jnp.ones((2, s), bool).at[:, 0].set(False)  # hide the class slot
  f = jax.jit(lambda m, l: m(TOKENS, l, mode="bidirectional", key_mask=key_mask))
  a, b = f(m, LABELS), f(m, jnp.array([3, 4]))
  np.testing.assert_allclose(a[:, 1:], b[:, 1:], atol=1e-6)  # labels no longer matter


def test_bfloat16_compute_is_close_to_fp32():
  m32, m16 = model("maskgil"), model("maskgil", dtype="bfloat16")
  a = jax.jit(lambda m: m.mar_logits(TOKENS, LABELS))(m32)
  b = jax.jit(lambda m: m.mar_logits(TOKENS, LABELS))(m16)
  assert b.dtype == jnp.float32
  assert jax.tree.leaves(nnx.state(m16))[0].dtype == jnp.float32  # fp32 master weights
  assert np.abs(a - b).max() < 0.05 * np.abs(a).max() + 1e-3
  m_bf16 = model("maskgil", dtype="bfloat16", param_dtype="bfloat16")
  assert {x.dtype for x in jax.tree.leaves(nnx.state(m_bf16, nnx.Param))} == {jnp.dtype(jnp.bfloat16)}
  c = jax.jit(lambda m: m.mar_logits(TOKENS, LABELS))(m_bf16)
  assert np.isfinite(c).all() and np.abs(c - a).max() < 0.05 * np.abs(a).max() + 1e-3


def test_layout_rope_rows():
  c = configlib.finalize(configlib.load_config("tiny:llamagen")).model
  cos, sin = Layout.from_config(c).rope_tables()
  assert cos.shape == (17, 8) and not cos[0].any() and not sin[0].any()
  c = configlib.finalize(configlib.load_config("tiny:maskgil")).model
  cos, _ = Layout.from_config(c).rope_tables()
  assert cos[0].any()  # the MaskGIL class token is rotated, not zeroed
  c = configlib.finalize(configlib.load_config("tiny:maskgil_reference")).model
  cos, _ = Layout.from_config(c).rope_tables()
  assert not cos[0].any() and cos[1:].all()


@pytest.mark.parametrize("override,field", [
    ({"model.dim": 66}, "config.model.dim"),
    ({"model.layout": "gpt2"}, "config.model.layout"),
    ({"model.n_kv_head": 3}, "config.model.n_kv_head"),
    ({"model.remat_policy": "sometimes"}, "config.model.remat_policy"),
    ({"model.dtype": "float8"}, "config.model.dtype"),
    ({"model.resid_dropout": 1.5}, "config.model.resid_dropout"),
    ({"data.image_size": 9}, "config.data.image_size"),
    ({"model.codebook_size": 100}, "config.model.codebook_size"),
])
def test_bad_config_values_name_the_field(override, field):
  c = configlib.load_config("tiny", override)
  with pytest.raises(configlib.ConfigError, match=field.replace(".", r"\.")):
    configlib.finalize(c)


def test_unknown_override_field_is_refused():
  with pytest.raises(configlib.ConfigError, match="model.dimension"):
    configlib.load_config("tiny", ["model.dimension=3"])
