"""The text demo's generator: the demo MaskGIL conditioned on captions of the shipped
Fashion-MNIST subset, trained on two aspect buckets (32x32 and 32x24 px) on a CPU.

The whole job (tokenizer, text encoder, this generator, samples from held-out prompt templates
and their figures):

  python -m maskgil_jax.demo --task text --workdir out/demo_text

This stage alone, through the trainer (the tokenizer and the text encoder folder come from the
demo's own stages):

  python -m maskgil_jax.train --config configs/demo_text.py --workdir out/demo_text/generator \
      --config.tokenizer.ckpt=out/demo_text/tokenizer \
      --config.text.encoder=out/demo_text/text_encoder
"""
from maskgil_jax import configlib

CAPTION_SLOTS = 12  # the longest demo caption is 8 word pieces with </s>
T5_WIDTH = 64  # the demo text encoder's d_model (maskgil_jax/demo_text.py)


def get_config():
  c = configlib.load_config("demo:generator")
  c.model.condition = "caption"
  c.model.caption_dim = T5_WIDTH
  c.model.cls_token_num = c.text.max_length = CAPTION_SLOTS
  c.data.name = "demo_captions"
  c.data.buckets = ((32, 32), (32, 24))
  c.objective.label_drop = 0.1  # caption drop: the null caption for guidance
  # sized with the tokenizer stage, sampling and judging to finish in under 15 minutes on 2 cores
  c.total_steps = 600
  return c
