"""MaskGIL-B (111M parameters), class-conditional ImageNet 256: the paper's bidirectional LLaMA
(2D RoPE, QK-norm, post-norm) trained with the MaskGIL recipe (configlib/recipes.py `maskgil`).

Mesh: data=-1 (pure data parallel; parameters replicated).

  python -m maskgil_jax.train --config configs/maskgil_b.py --workdir gs://BUCKET/runs/maskgil_b \
      --config.tokenizer.ckpt=gs://BUCKET/vq_ds16_c2i.pt \
      --config.data.tfds_data_dir=gs://BUCKET/tfds

On a TPU pod (every worker runs the same command; restart it after a preemption):

  launch/tpu_pod.sh TPU_NAME ZONE configs/maskgil_b.py gs://BUCKET/runs/maskgil_b

Memory per device without running: add --memory-report.

Block ablations (docs/training.md "Block variants"): `configs/maskgil_b.py:no_qknorm` (no
QK-norm) and `configs/maskgil_b.py:prenorm` (LlamaGen's pre-norm instead of post-norm).
"""
from maskgil_jax.configlib import recipes


def get_config(variant: str = ""):
  return recipes.block_variant(recipes.maskgil("B"), variant)
