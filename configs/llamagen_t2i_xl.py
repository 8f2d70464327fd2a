"""LlamaGen's released text-to-image GPT-XL (stage 1, 256 px): FLAN-T5-XL captions, 120 slots.

  python -m maskgil_jax.convert --kind llamagen-t2i --src t2i_XL_stage1_256.pt \\
      --config configs/llamagen_t2i_xl.py --out ckpt/llamagen_t2i_xl
  python -m maskgil_jax.sample --config configs/llamagen_t2i_xl.py --ckpt t2i_XL_stage1_256.pt \\
      --tokenizer vq_ds16_t2i.pt --text-encoder FLAN_T5_XL_DIR --prompt "a red bus" \\
      --decode ar --out out/t2i
  python -m maskgil_jax.params --config configs/llamagen_t2i_xl.py

The text encoder folder can also be set here (`--config.text.encoder=FLAN_T5_XL_DIR`). See
docs/text_to_image.md.
"""
from maskgil_jax.configlib import recipes


def get_config():
  return recipes.llamagen_t2i("XL")
