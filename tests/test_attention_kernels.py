"""The attention kernels against the plain XLA path, on CPU.

Pallas splash attention (the TPU kernel) runs in interpret mode; the cuDNN kernel needs an
NVIDIA GPU, so its arguments (`is_causal` plus a padding mask) are checked as pure functions
against the boolean mask and run through XLA's implementation; the choice of kernel is checked
on made-up platforms. Padded (hidden) query rows may differ under splash attention and are
compared apart (`attention_kernels.splash_segment_ids` says why).
"""
import logging
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maskgil_jax import configlib
from maskgil_jax.configlib import ConfigError
from maskgil_jax.models import attention_kernels as ak
from maskgil_jax.models import masks
from maskgil_jax.models.attention import attend
from maskgil_jax.models.conditions import Caption
from maskgil_jax.models.transformer import Transformer
from worker import run_worker

FIELD = r"config\.model\.attention_kernel"
TPU_INTERPRET = ak.Platform("tpu", interpret=True)


def qkv(b=2, t=384, hq=4, hkv=2, d=16, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(keys[0], (b, t, hq, d)), jax.random.normal(keys[1], (b, t, hkv, d)),
          jax.random.normal(keys[2], (b, t, hkv, d)))


def left_padded(t, pads):
  """[B, T] key mask of caption-like prefixes: row i hides its first pads[i] slots."""
  return jnp.arange(t)[None, :] >= jnp.asarray(pads)[:, None]


PADS = (37, 0)


def mask_of(mode, t, padded):
  return masks.AttentionMask.create(mode, t, key_mask=left_padded(t, PADS) if padded else None)


def splash(q, k, v, mask):
  return jax.jit(lambda q, k, v, m: ak.splash_attention(q, k, v, m, interpret=True))(q, k, v,
                                                                                       mask)


def xla(q, k, v, mask):
  return jax.jit(attend)(q, k, v, mask)


def assert_valid_rows_close(out, ref, mask, atol=2e-5):
  """Equal on the rows of valid queries; a hidden query row under splash attention sees only
  its own slot (splash_segment_ids), so it returns that slot's value."""
  valid = np.ones(out.shape[:2], bool) if mask.key_mask is None else np.asarray(mask.key_mask)
  np.testing.assert_allclose(np.asarray(out)[valid], np.asarray(ref)[valid], atol=atol, rtol=0)
  return valid


# ---- Pallas splash attention (interpret mode) ---------------------------------------------
@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "caption_padding"])
def test_splash_equals_xla_with_grouped_heads(mode, padded):
  q, k, v = qkv()  # 384 slots: three 128-slot tiles each way, so tiles are skipped (causal)
  mask = mask_of(mode, 384, padded)
  out = splash(q, k, v, mask)
  valid = assert_valid_rows_close(out, xla(q, k, v, mask), mask)
  if padded:  # hidden rows return their own value (query head h reads key head h // 2)
    own = np.repeat(np.asarray(v), 2, axis=2)
    np.testing.assert_allclose(np.asarray(out)[~valid], own[~valid], atol=1e-5, rtol=0)


@pytest.mark.parametrize("hkv", [4, 1], ids=["mha", "mqa"])
def test_splash_equals_xla_for_other_head_groupings(hkv):
  q, k, v = qkv(t=256, hkv=hkv, seed=1)
  mask = mask_of("causal", 256, True)
  assert_valid_rows_close(splash(q, k, v, mask), xla(q, k, v, mask), mask)


def test_splash_gradients_equal_xla():
  q, k, v = qkv(t=256, seed=2)
  mask = mask_of("causal", 256, True)
  valid = mask.key_mask[:, :, None, None]

  def loss(fn):  # over valid query rows only (hidden rows differ, and nothing reads them)
    return lambda q, k, v: jnp.sum(jnp.where(valid, jnp.sin(fn(q, k, v, mask)), 0.0))

  got = jax.jit(jax.grad(loss(lambda *a: ak.splash_attention(*a, interpret=True)), (0, 1, 2)))(
      q, k, v)
  want = jax.jit(jax.grad(loss(attend), (0, 1, 2)))(q, k, v)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=5e-5, rtol=0)


@pytest.mark.parametrize("t", [257, 376])  # 1 class slot + 16x16; 120 caption slots + 16x16
@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "caption_padding"])
def test_splash_padded_to_128_equals_xla(t, mode, padded):
  """A length off the 128 grid is padded: the real rows equal XLA's, the output keeps T rows."""
  q, k, v = qkv(t=t)
  mask = mask_of(mode, t, padded)
  out = splash(q, k, v, mask)
  assert out.shape == q.shape
  assert_valid_rows_close(out, xla(q, k, v, mask), mask)


def test_splash_padded_gradients_equal_xla():
  q, k, v = qkv(t=257)
  mask = mask_of("bidirectional", 257, False)
  loss = lambda f: (lambda q, k, v: jnp.sum(f(q, k, v, mask) ** 2))
  got = jax.jit(jax.grad(loss(lambda *a: ak.splash_attention(*a, interpret=True)), (0, 1, 2)))(
      q, k, v)
  want = jax.jit(jax.grad(loss(attend), (0, 1, 2)))(q, k, v)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=5e-5, rtol=0)


def test_splash_blocks_and_segment_ids():
  assert [ak.splash_block(t, t) for t in (128, 256, 384, 1024, 257, 376, 1)] == [
      128, 256, 128, 512, 128, 128, 128]
  assert [ak.splash_length(t) for t in (128, 257, 376, 1024)] == [128, 384, 384, 1024]
  assert ak.splash_block(256, 128) is None  # full self-attention only
  seg = ak.splash_segment_ids(left_padded(6, (2, 0)))
  np.testing.assert_array_equal(seg, [[1, 2, 0, 0, 0, 0], [0] * 6])


# ---- cuDNN: the arguments, checked without the kernel ---------------------------------------
@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "caption_padding"])
def test_cudnn_mask_rebuilds_the_boolean_mask(mode, padded):
  t = 10
  mask = mask_of(mode, t, padded)
  is_causal, m = ak.cudnn_mask(mask)
  assert is_causal == (mode == "causal")
  assert (m is None) == (not padded)  # no dense mask (bias) unless there is padding
  rebuilt = jnp.tril(jnp.ones((t, t), bool)) if is_causal else jnp.ones((t, t), bool)
  rebuilt = rebuilt[None, None] & (True if m is None else m)
  want = mask.dense()
  np.testing.assert_array_equal(*jnp.broadcast_arrays(rebuilt, want))


@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "caption_padding"])
def test_cudnn_arguments_through_xla_equal_the_dense_path(mode, padded):
  q, k, v = qkv(t=64, seed=3)
  mask = mask_of(mode, 64, padded)
  got = jax.jit(lambda q, k, v, m: ak.cudnn_attention(q, k, v, m, implementation="xla"))(
      q, k, v, mask)
  np.testing.assert_allclose(got, xla(q, k, v, mask), atol=1e-5, rtol=0)


def test_cudnn_is_not_asked_to_decode():
  with pytest.raises(ValueError, match="decoding runs XLA"):
    ak.cudnn_mask(masks.AttentionMask.create("decode", 1, 16, start=3))


# ---- the choice ---------------------------------------------------------------------------
def shape(t=256, dtype="bfloat16", **kw):
  return ak.Shape(t, t, 64, dtype, **kw)


H100, V100 = ak.Platform("nvidia", (9, 0)), ak.Platform("nvidia", (7, 0))


def test_auto_runs_xla_on_this_cpu():
  assert ak.platform().kind == "cpu"
  assert ak.resolve("auto", shape()) == ak.XLA


@pytest.mark.parametrize("plat,shp,want", [
    (H100, shape(), "cudnn"),
    (H100, shape(t=257), "cudnn"),  # no mask: odd lengths are fine
    (H100, shape(t=257, masked=True), "xla"),  # a bias needs even lengths
    (H100, shape(dtype="float32"), "xla"),
    (H100, shape(dropout=True), "xla"),
    (H100, shape(decode=True), "xla"),
    (V100, shape(), "xla"),
    (ak.Platform("nvidia", (8, 0)), ak.Shape(256, 256, 192, "bfloat16"), "xla"),  # > 128
    (H100, ak.Shape(256, 256, 192, "bfloat16"), "cudnn"),
    (ak.Platform("tpu"), shape(dtype="float32"), "pallas"),
    (ak.Platform("tpu"), shape(masked=True), "pallas"),
    (ak.Platform("tpu"), shape(t=257), "pallas"),  # 1 class slot + 16x16, padded to 384
    (ak.Platform("tpu"), shape(t=376, masked=True), "pallas"),  # 120 caption slots + 16x16
    (ak.Platform("tpu"), shape(t=129), "xla"),  # padding to 256 would double the work
    (ak.Platform("tpu"), shape(dropout=True), "xla"),
    (ak.Platform("tpu"), shape(t=1, decode=True), "xla"),
    (ak.Platform("cpu"), shape(), "xla"),
    (ak.Platform("rocm"), shape(), "xla"),
])
def test_auto_choice(plat, shp, want):
  kernel, notice = ak.choose("auto", plat, shp)
  assert kernel.name == want
  # a notice exactly where an accelerator's kernel was passed over for this call
  assert (notice is not None) == (want == "xla" and plat.kind in ak.PREFERRED
                                  and not shp.decode)


def test_auto_fallback_is_logged(monkeypatch, caplog):
  monkeypatch.setattr(ak, "platform", lambda: H100)
  with caplog.at_level(logging.INFO, logger=ak.__name__):
    assert ak.resolve("auto", shape(dtype="float32")) == ak.XLA
  assert "instead of cudnn" in caplog.text and "float32" in caplog.text


@pytest.mark.parametrize("requested,plat,shp,why", [
    ("cudnn", ak.Platform("cpu"), shape(), "needs an NVIDIA GPU; this process runs on cpu"),
    ("cudnn", ak.Platform("cpu"), shape(t=1, decode=True), "needs an NVIDIA GPU"),
    ("cudnn", V100, shape(), "compute capability 8.0"),
    ("cudnn", H100, shape(dtype="float32"), "float16 or bfloat16"),
    ("pallas", ak.Platform("cpu"), shape(), "needs a TPU"),
    ("pallas", ak.Platform("tpu"), ak.Shape(256, 128, 64, "bfloat16"), "equal query and key"),
    ("flash", H100, shape(), "one of"),
])
def test_explicit_kernel_that_cannot_run_is_refused_naming_the_field(requested, plat, shp, why):
  with pytest.raises(ConfigError, match=FIELD) as err:
    ak.choose(requested, plat, shp)
  assert why in str(err.value)


def test_explicit_kernels_where_they_can_run():
  assert ak.choose("cudnn", H100, shape()) == (ak.Kernel("cudnn"), None)
  assert ak.choose("pallas", TPU_INTERPRET, shape()) == (ak.Kernel("pallas", True), None)
  assert ak.choose("xla", H100, shape()) == (ak.XLA, None)
  # decoding runs XLA under any kernel the platform accepts
  assert ak.choose("pallas", ak.Platform("tpu"), shape(t=1, decode=True)) == (ak.XLA, None)


@pytest.mark.parametrize("override,why", [
    ({"model.attention_kernel": "flash"}, "one of"),
    ({"model.attention_kernel": "cudnn"}, "float16 or bfloat16"),  # tiny is float32
    ({"model.attention_kernel": "cudnn", "model.dtype": "bfloat16", "model.dim": 48},
     "a multiple of 8 and at most 256, not 12"),
    ({"model.attention_kernel": "pallas", "model.attn_dropout": 0.1}, "attention dropout"),
])
def test_finalize_refuses_what_no_platform_can_run(override, why):
  with pytest.raises(ConfigError, match=FIELD) as err:
    configlib.finalize(configlib.load_config("tiny", override))
  assert why in str(err.value)


def test_finalize_accepts_every_kernel_that_may_run():
  for kernel in ("auto", "xla", "pallas"):
    configlib.finalize(configlib.load_config("tiny", {"model.attention_kernel": kernel}))
  configlib.finalize(configlib.load_config("tiny", {"model.attention_kernel": "cudnn",
                                                    "model.dtype": "bfloat16"}))


# ---- a tiny transformer with each kernel --------------------------------------------------
TOKENS = jax.random.randint(jax.random.key(5), (2, 16), 0, 512)
LABELS = jnp.array([1, 7])


def tiny_model(kernel, layout="maskgil", **overrides):
  """A tiny model of 128 slots (112 condition slots + 4x4 tokens: one 128 tile) with grouped
  KV heads and a random output head; the same weights for every kernel."""
  c = configlib.load_config(f"tiny:{layout}", {"model.attention_kernel": kernel,
                                                "model.n_kv_head": 2, **overrides})
  c.model.cls_token_num = 112
  if c.model.condition == "caption":
    c.text.max_length = 112
  m = Transformer(configlib.finalize(c).model, rngs=nnx.Rngs(0))
  w = m.output.weight
  w.set_value(0.5 * jax.random.normal(jax.random.key(1), w.get_value().shape))
  return m


def test_explicit_cudnn_is_refused_at_trace_time_on_cpu():
  m = tiny_model("cudnn", **{"model.dtype": "bfloat16"})  # finalize cannot know the platform
  with pytest.raises(ConfigError, match=FIELD + ": 'cudnn' cannot run here: cuDNN flash "
                     "attention needs an NVIDIA GPU; this process runs on cpu"):
    jax.eval_shape(lambda m: m(TOKENS, LABELS, mode="bidirectional"), m)
  with pytest.raises(ConfigError, match=FIELD):
    jax.eval_shape(lambda m: m.decode(None, LABELS, m.init_cache(2)), m)


@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
def test_transformer_with_splash_equals_xla(monkeypatch, mode):
  f = jax.jit(lambda m: m(TOKENS, LABELS, mode=mode))
  want = f(tiny_model("xla"))
  monkeypatch.setattr(ak, "platform", lambda: TPU_INTERPRET)
  for kernel in ("pallas", "auto"):
    np.testing.assert_allclose(f(tiny_model(kernel)), want, atol=1e-4, rtol=0)


def caption(b=2, p=112, pads=(100, 0)):
  features = jax.random.normal(jax.random.key(6), (b, p, 32))
  return Caption.create(features, left_padded(p, pads))


@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
def test_caption_model_with_splash_equals_xla_on_valid_slots(monkeypatch, mode):
  cap = caption()
  f = jax.jit(lambda m, c: m(TOKENS, c, mode=mode))
  want = f(tiny_model("xla", "maskgil_t2i"), cap)
  monkeypatch.setattr(ak, "platform", lambda: TPU_INTERPRET)
  got = f(tiny_model("pallas", "maskgil_t2i"), cap)
  valid = np.concatenate([np.asarray(cap.mask), np.ones((2, 16), bool)], axis=1)
  np.testing.assert_allclose(np.asarray(got)[valid], np.asarray(want)[valid], atol=1e-4, rtol=0)


@pytest.mark.parametrize("layout", ["maskgil", "maskgil_t2i"])
def test_transformer_through_the_cudnn_arguments_equals_xla(monkeypatch, layout):
  """The cuDNN path's wiring (bf16, is_causal, caption padding as a mask) with XLA standing in
  for the kernel, which needs an NVIDIA GPU."""
  labels = caption() if layout.endswith("t2i") else LABELS
  f = jax.jit(lambda m, l: (m(TOKENS, l, mode="causal"), m(TOKENS, l, mode="bidirectional")))
  want = f(tiny_model("xla", layout, **{"model.dtype": "bfloat16"}), labels)
  monkeypatch.setattr(ak, "platform", lambda: H100)
  cudnn = ak.cudnn_attention
  monkeypatch.setattr(ak, "cudnn_attention",
                      lambda q, k, v, m: cudnn(q, k, v, m, implementation="xla"))
  got = f(tiny_model("cudnn", layout, **{"model.dtype": "bfloat16"}), labels)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=2e-2, rtol=0)


# ---- under a mesh -------------------------------------------------------------------------
WORKER = textwrap.dedent("""
    import os, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, jax.numpy as jnp, numpy as np
    from maskgil_jax.models import attention_kernels as ak, masks
    from maskgil_jax.models.attention import attend
    from maskgil_jax.parallel import rules as rules_lib

    out = {}
    for name, shape, hkv in (("data2_tensor2", (2, 1, 2), 2), ("tensor4_mqa", (1, 1, 4), 1)):
      mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(shape), rules_lib.MESH_AXES)
      keys = jax.random.split(jax.random.key(0), 3)
      q = jax.random.normal(keys[0], (4, 128, 4, 16))
      k, v = (jax.random.normal(x, (4, 128, hkv, 16)) for x in keys[1:])
      key_mask = jnp.arange(128)[None] >= jnp.array([30, 0, 5, 0])[:, None]
      mask = masks.AttentionMask.create("causal", 128, key_mask=key_mask)
      valid = key_mask[:, :, None, None]
      loss = lambda fn: lambda q, k, v: jnp.sum(jnp.where(valid, jnp.sin(fn(q, k, v, mask)), 0))
      splash = lambda q, k, v, m: ak.splash_attention(q, k, v, m, interpret=True)
      with jax.set_mesh(mesh), rules_lib.axis_rules(rules_lib.make_rules()):
        got = jax.jit(jax.value_and_grad(loss(splash), (0, 1, 2)))(q, k, v)
        want = jax.jit(jax.value_and_grad(loss(attend), (0, 1, 2)))(q, k, v)
        text = jax.jit(lambda q, k, v: splash(q, k, v, mask)).lower(q, k, v).as_text()
      # loss and gradients; relative to each one's largest entry (the loss sums 32k terms)
      out[name] = {"diff": max(float(jnp.abs(a - b).max() / max(1.0, jnp.abs(b).max()))
                               for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want))),
                   "shard_map": "manual" in text}  # the kernel runs in a manual region
    print("RESULT", json.dumps(out))
""")


def test_splash_under_a_mesh_runs_per_shard_and_equals_xla():
  for name, r in run_worker(WORKER, timeout=900).items():
    assert r["shard_map"], name
    assert r["diff"] < 1e-5, (name, r)
