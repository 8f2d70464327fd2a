"""The paper's text-conditional MaskGIL (GPT-XL size, ~776M with the caption projection): the
MaskGIL block (2D RoPE, QK-norm, post-norm, MASK token) and recipe with FLAN-T5-XL captions
(120 slots of 2,048), caption drop 0.1 for guidance, aspect buckets around 256 px (stage
'256'), then 512 px buckets (stage '512', from the stage-1 checkpoint). FSDP over every device.

Captions once through FLAN-T5-XL (resumable, run on every host), then train on the features:

  python -m maskgil_jax.extract_text --config configs/maskgil_t2i_xl.py \\
      --config.data.path=captions.jsonl --config.text.encoder=FLAN_T5_XL_DIR --out gs://B/t5xl
  python -m maskgil_jax.train --config configs/maskgil_t2i_xl.py --workdir gs://B/runs/t2i_256 \\
      --config.data.path=captions.jsonl --config.data.text_features=gs://B/t5xl \\
      --config.tokenizer.ckpt=vq_ds16_t2i.pt
  python -m maskgil_jax.train --config configs/maskgil_t2i_xl.py:512 --workdir gs://B/runs/t2i_512 \\
      --config.data.path=hires.jsonl --config.data.text_features=gs://B/t5xl_hires \\
      --config.tokenizer.ckpt=vq_ds16_t2i.pt --config.ckpt.init_from=gs://B/runs/t2i_256/checkpoints/400000

(without data.text_features the frozen T5 of text.encoder encodes the captions in every step).
On a TPU pod: launch/tpu_pod.sh TPU_NAME ZONE configs/maskgil_t2i_xl.py gs://B/runs/t2i_256.
Parameters: `python -m maskgil_jax.params --config configs/maskgil_t2i_xl.py`; memory per device
without data or weights: add --memory-report to the train command. docs/text_to_image.md.
"""
from maskgil_jax.configlib import recipes


def get_config(stage: str = "256"):
  return recipes.maskgil_t2i("XL", stage)
