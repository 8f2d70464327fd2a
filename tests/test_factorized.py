"""Factorized LFQ tokens (Open-MAGVIT2's asymmetric token factorization) in MAR and AR: shapes,
the loss as the sum of the sub-token losses, and greedy decoding on a tiny config."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maskgil_jax import configlib
from maskgil_jax.decode import ar, mar
from maskgil_jax.decode.sampling import DecodeSettings
from maskgil_jax.models import factorized
from maskgil_jax.models.transformer import Transformer, num_params
from maskgil_jax.training import flops, objectives

BITS = (3, 6)  # the tiny codebook's 512 codes: 8 x 64


def tiny(layout="maskgil", bits=BITS, **fields):
  c = configlib.load_config(f"tiny:{layout}")
  c.model.token_factorization = bits
  for k, v in fields.items():
    c.model[k] = v
  return configlib.finalize(c)


def random_model(config, seed=0):
  """A tiny factorized model whose zero-initialised heads are made random (else every
  sub-token is equally likely and greedy decoding has nothing to pick)."""
  model = Transformer(config.model, rngs=nnx.Rngs(seed))
  for i, head in enumerate(model.head):
    head.weight[...] = jax.random.normal(jax.random.key(10 + i), head.weight.shape)
  return model


def test_split_and_join_are_inverse():
  codes = jnp.arange(512)
  s0, s1 = factorized.split(codes, BITS)
  assert int(s0.max()) == 7 and int(s1.max()) == 63
  np.testing.assert_array_equal(factorized.join(s0, s1, BITS), codes)


def test_config_is_checked_with_the_field_named():
  for bits, words in [((3, 5), r"makes 2\^8 codes, but model.codebook_size is 512"),
                      ((9,), "two positive bit counts"), ((3, 3, 3), "two positive bit counts"),
                      ((0, 9), "two positive bit counts")]:
    with pytest.raises(configlib.ConfigError, match=f"config.model.token_factorization: .*{words}"):
      tiny(bits=bits)
  with pytest.raises(configlib.ConfigError, match="maskgil_reference layout keeps"):
    tiny("maskgil_reference")
  with pytest.raises(configlib.ConfigError, match="config.model.factorized_n_layer"):
    tiny(factorized_n_layer=0)


@pytest.mark.parametrize("layout, mask_rows", [("maskgil", 1), ("llamagen", 0)])
def test_parameters_mirror_open_magvit2_and_are_fewer(layout, mask_rows):
  config = tiny(layout)
  model = nnx.eval_shape(lambda: Transformer(config.model, rngs=nnx.Rngs(0)))
  flat = {".".join(map(str, p)): v.value.shape
          for p, v in nnx.state(model, nnx.Param).flat_state()}
  assert flat["pre_emb.weight"] == (8 + mask_rows, 64)
  assert flat["post_emb.weight"] == (64 + mask_rows, 64)
  assert flat["head.0.weight"] == (64, 8) and flat["head.1.weight"] == (64, 64)
  assert flat["factorized_blocks.attention.wqkv.weight"][0] == 2  # two intra blocks
  assert "tok_embeddings.weight" not in flat and "output.weight" not in flat
  plain = configlib.finalize(configlib.load_config(f"tiny:{layout}"))
  assert flat.keys() - {k for k in flat if k.startswith(("pre_emb", "post_emb", "head.",
                                                          "factorized_blocks"))} \
      <= set(_names(plain))
  # with a 2^18 codebook at B width the factorized model is far smaller (the study's case)
  study = lambda arg: configlib.finalize(configlib.load_config(f"configs/tokenizer_study.py:{arg}"))
  n_fact, n_flat = (_count(study(f"maskgil_b,{t}").model) for t in ("magvit2", "magvit2_flat"))
  n_vq = _count(study("maskgil_b,vq16").model)
  assert n_fact < n_flat / 3 and n_fact < n_vq  # smaller than even the 16k-code flat model
  assert study("llamagen_b,magvit2").model.token_factorization == (6, 12)


def _names(config):
  model = nnx.eval_shape(lambda: Transformer(config.model, rngs=nnx.Rngs(0)))
  return [".".join(map(str, p)) for p, _ in nnx.state(model, nnx.Param).flat_state()]


def _count(model_cfg):
  return num_params(nnx.eval_shape(lambda: Transformer(model_cfg, rngs=nnx.Rngs(0))))


def _joint_log_probs(model, h):
  """log p(code) [.., 512] of every code, enumerating s0: the distribution the two heads
  define together."""
  l0 = jax.nn.log_softmax(model.sub_logits(h), axis=-1)
  rows = []
  for s0 in range(8):
    _, l1 = model.sub_logits(h, jnp.full(h.shape[:-1], s0, jnp.int32))
    rows.append(l0[..., s0:s0 + 1] + jax.nn.log_softmax(l1, axis=-1))
  # code = s0 + 8 * s1: interleave so index code holds (s0, s1)
  return jnp.stack(rows, axis=-1).reshape(h.shape[:-1] + (512,))


@pytest.mark.parametrize("layout, loss_fn", [("maskgil", objectives.mar_loss),
                                             ("llamagen", objectives.ar_loss)])
def test_loss_is_the_sum_of_the_sub_token_losses(layout, loss_fn):
  config = tiny(layout)
  model = random_model(config)
  codes = jax.random.randint(jax.random.key(3), (2, 16), 0, 512)
  out = model.ar_logits(codes, jnp.array([1, 2])) if layout == "llamagen" else \
      model.mar_logits(codes, jnp.array([1, 2]))
  ce, hits = objectives.code_scores(model, out, codes)
  s0, s1 = factorized.split(codes, BITS)
  l0, l1 = model.sub_logits(out, s0)
  np.testing.assert_allclose(ce, objectives.cross_entropy(l0, s0) + objectives.cross_entropy(l1, s1),
                             rtol=1e-6)
  # ... which is the cross-entropy of the joint distribution over all 512 codes
  joint = _joint_log_probs(model, out)
  np.testing.assert_allclose(jax.scipy.special.logsumexp(joint, -1), 0.0, atol=1e-5)
  np.testing.assert_allclose(ce, -jnp.take_along_axis(joint, codes[..., None], -1)[..., 0],
                             rtol=1e-5, atol=1e-5)
  assert hits.dtype == jnp.bool_
  # through the training loss, jitted, with gradients reaching both heads and both tables
  obj = config.objective
  obj.label_drop = 0.0
  grad_fn = jax.jit(jax.value_and_grad(lambda m, b, k: loss_fn(m, b, k, obj), has_aux=True))
  (loss, metrics), grads = grad_fn(model, {"codes": codes.reshape(2, 4, 4), "label": jnp.array([1, 2])},
                                   jax.random.key(0))
  assert np.isfinite(float(loss)) and 0.0 <= float(metrics["accuracy"]) <= 1.0
  for g in (grads.head[0].weight, grads.head[1].weight, grads.pre_emb.weight,
            grads.post_emb.weight, grads.factorized_blocks.attention.wqkv.weight):
    assert float(jnp.abs(g[...]).max()) > 0


def test_untrained_loss_is_log_of_the_codebook():
  """Zero-initialised heads: each sub-token uniform, so CE = log 8 + log 64 = log 512."""
  config = tiny()
  model = Transformer(config.model, rngs=nnx.Rngs(0))
  codes = jnp.arange(32).reshape(2, 4, 4)
  loss, _ = objectives.mar_loss(model, {"codes": codes, "label": jnp.array([0, 1])},
                                jax.random.key(0), config.objective)
  assert float(loss) == pytest.approx(np.log(512), rel=1e-5)


@pytest.mark.parametrize("w", [0.0, 2.0])
def test_greedy_mar_decoding_takes_each_sub_token_argmax(w):
  model = random_model(tiny())
  labels = jnp.array([3, 5])
  settings = DecodeSettings.create(cfg_scale=w, steps=1, temperature=0.0, choice_temperature=0.0,
                                   cfg_schedule="constant")
  state = jax.jit(mar.generate)(model, labels, jax.random.key(0), settings)
  tokens = np.asarray(state.tokens)
  assert ((tokens >= 0) & (tokens < 512)).all()
  # one step from all-MASK: every position's s0 = argmax of its (guided) logits, then s1 given it
  grid = jnp.full((2, 16), model.layout.mask_id, jnp.int32)
  h_c = model.mar_logits(grid, labels)
  h_u = model.mar_logits(grid, jnp.full((2,), model.layout.null_label))
  g = lambda c, u: c + w * (c - u)
  s0 = jnp.argmax(g(model.sub_logits(h_c), model.sub_logits(h_u)), -1)
  s1 = jnp.argmax(g(model.sub_logits(h_c, s0)[1], model.sub_logits(h_u, s0)[1]), -1)
  np.testing.assert_array_equal(tokens, factorized.join(s0, s1, BITS))


def test_greedy_ar_decoding_matches_the_teacher_forced_model():
  model = random_model(tiny("llamagen"))
  labels = jnp.array([3, 5])
  settings = DecodeSettings.create(cfg_scale=0.0, temperature=0.0)
  tokens = jax.jit(ar.generate)(model, labels, jax.random.key(0), settings).tokens
  assert tokens.shape == (2, 16) and ((np.asarray(tokens) >= 0) & (np.asarray(tokens) < 512)).all()
  h = model.ar_logits(tokens, labels)  # slot j sees the decoded tokens before j
  s0, s1 = factorized.split(tokens, BITS)
  l0, l1 = model.sub_logits(h, s0)
  np.testing.assert_array_equal(jnp.argmax(l0, -1), s0)
  np.testing.assert_array_equal(jnp.argmax(l1, -1), s1)
  with pytest.raises(ValueError, match="factorized model has no single logits"):
    ar.generate(model, labels, jax.random.key(0), settings, return_logits=True)
  guided = DecodeSettings.create(cfg_scale=1.5, temperature=1.0, top_k=4)
  out = jax.jit(ar.generate)(model, labels, jax.random.key(1), guided).tokens
  assert ((np.asarray(out) >= 0) & (np.asarray(out) < 512)).all()


def test_flop_count_follows_the_factorized_head():
  """The flat 2^18-way head is replaced by heads of 2^6 + 2^12 and two intra blocks per
  position (B: 7,077,888 multiply-adds per token and block)."""
  study = lambda arg: configlib.finalize(configlib.load_config(f"configs/tokenizer_study.py:{arg}"))
  fact, flat = study("maskgil_b,magvit2").model, study("maskgil_b,magvit2_flat").model
  n = 257
  diff = flops.transformer_forward_flops(flat, n, False) - flops.transformer_forward_flops(fact, n, False)
  per_token_block = 768 * 3 * 768 + 768 * 768 + 3 * 768 * 2048
  assert diff == 2.0 * n * (768 * 2 ** 18 - 768 * (2 ** 6 + 2 ** 12) - 2 * 2 * per_token_block)
