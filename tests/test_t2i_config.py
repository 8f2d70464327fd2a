"""The paper's text-conditional MaskGIL experiment file."""
import pathlib

import numpy as np
from flax import nnx

from maskgil_jax import configlib
from maskgil_jax.models.transformer import Transformer, num_params

CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "maskgil_t2i_xl.py"


def test_maskgil_t2i_xl_is_the_maskgil_block_with_flan_t5_xl_captions_in_buckets():
  c = configlib.finalize(configlib.load_config(str(CONFIG)))
  m = c.model
  assert (m.layout, m.rope, m.qk_norm, m.norm_placement) == ("maskgil", "2d", True, "post")
  assert (m.n_layer, m.dim, m.condition, m.caption_dim, m.cls_token_num) == (
      36, 1280, "caption", 2048, 120)
  assert c.objective.name == "mar" and c.objective.label_drop == 0.1
  assert (c.mesh.data, c.mesh.fsdp) == (1, -1) and c.text.max_length == 120
  assert (256, 256) in c.data.buckets and all(h % 16 == 0 and w % 16 == 0
                                              for h, w in c.data.buckets)
  model = nnx.eval_shape(lambda: Transformer(m, rngs=nnx.Rngs(0)))
  assert 770e6 < num_params(model) < 780e6  # GPT-XL with the caption projection
  stage2 = configlib.finalize(configlib.load_config(f"{CONFIG}:512"))
  assert stage2.model.grid_size == 32 and (512, 512) in stage2.data.buckets


def test_caption_training_does_not_flip_unless_asked():
  for arg in ("", ":512", ":chameleon"):
    assert configlib.finalize(configlib.load_config(f"{CONFIG}{arg}")).data.random_flip is False
  asked = configlib.finalize(configlib.load_config(str(CONFIG), ["data.random_flip=True"]))
  assert asked.data.random_flip is True
  # the caption pipeline follows it: an asymmetric image never comes out mirrored by default
  from maskgil_jax.data.caption_pipeline import CaptionExample

  class Source:
    def load(self, record):
      return np.arange(48, dtype=np.uint8).reshape(4, 4, 3), ["a thing on the left"]

  class Features:
    def get(self, index, caption):
      return np.zeros((1, 4), np.float32), np.ones((1,), np.int32)

  image = Source().load(0)[0]
  for config, flips in ((configlib.load_config(str(CONFIG)), False), (asked, True)):
    example = CaptionExample(Source(), config.data, (4, 4), config.text, Features())
    out = [example.random_map(0, np.random.default_rng(seed))["image"] for seed in range(16)]
    mirrored = [bool((o == image[:, ::-1]).all()) for o in out]
    assert any(mirrored) == flips and all((o == image).all() or m for o, m in zip(out, mirrored))


def test_chameleon_variant_is_the_same_model_on_chameleons_8192_codes_at_512_px():
  c = configlib.finalize(configlib.load_config(f"{CONFIG}:chameleon"))
  t, m = c.tokenizer, c.model
  assert (t.preset, t.kind, t.codebook_size, t.codebook_dim) == ("chameleon_vqgan", "taming",
                                                                 8192, 256)
  assert (m.codebook_size, m.grid_size, c.data.image_size) == (8192, 32, 512)
  assert (m.layout, m.n_layer, m.dim, m.condition, m.cls_token_num) == (
      "maskgil", 36, 1280, "caption", 120)
  assert all(h % 16 == 0 and w % 16 == 0 for h, w in c.data.buckets)
  base = num_params(nnx.eval_shape(
      lambda: Transformer(configlib.finalize(configlib.load_config(str(CONFIG))).model,
                          rngs=nnx.Rngs(0))))
  model = nnx.eval_shape(lambda: Transformer(m, rngs=nnx.Rngs(0)))
  # only the code table and the head shrink: 16,384 -> 8,192 codes (+ MASK in the table)
  assert base - num_params(model) == 2 * (16384 - 8192) * 1280
  from maskgil_jax.models.vq import VQModel
  vq = nnx.eval_shape(lambda: VQModel(t, rngs=nnx.Rngs(0)))
  assert vq.quantize.embedding.weight.shape == (8192, 256)


def test_chameleon_variant_trains_through_the_same_trainer_at_tiny_size(tmp_path):
  from maskgil_jax.training import trainer
  c = configlib.load_config(f"{CONFIG}:chameleon", {
      "model.n_layer": "2", "model.n_head": "4", "model.n_kv_head": "4", "model.dim": "64",
      "model.caption_dim": "32",
      "model.dtype": "float32", "text.encoder": "tests/fixtures/t5_encoder_tiny",
      "data.name": "demo_captions", "data.fit": "pad", "data.image_size": "16",
      "data.read_threads": "0", "data.prefetch": "0", "batch_size": "4", "total_steps": "2",
      "log.every_steps": "1"})
  c.data.buckets = ((16, 16), (16, 12))
  c.tokenizer = configlib.tokenizer_config("tiny_chameleon")  # the fixture's shapes
  c.tokenizer.ckpt = "tests/fixtures/chameleon_vqgan_tiny.safetensors"
  c.model.codebook_size = c.tokenizer.codebook_size
  out = trainer.train(configlib.finalize(c), tmp_path / "run")
  assert out["stopped"] == "done" and np.isfinite(out["metrics"]["loss"])
