"""The paper's text-conditional MaskGIL experiment file."""
import pathlib

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
