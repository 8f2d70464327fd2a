"""MaskGIL, class-conditional ImageNet 256: the paper's bidirectional LLaMA (2D RoPE, QK-norm,
post-norm) trained with the MaskGIL recipe (configlib/recipes.py `maskgil`), one file for every
size: `configs/maskgil.py:B|L|XL|XXL` (111M, 343M, 775M, 1.4B parameters; XXL is also
`configs/maskgil_1b.py`, the documented entry point of the largest model).

Mesh: B and L data=-1 (pure data parallel; parameters replicated); XL and XXL data=1, fsdp=-1
(every device shards parameters and optimizer state).

  python -m maskgil_jax.train --config configs/maskgil.py:B --workdir gs://BUCKET/runs/maskgil_b \
      --config.tokenizer.ckpt=gs://BUCKET/vq_ds16_c2i.pt \
      --config.data.tfds_data_dir=gs://BUCKET/tfds

On a TPU pod (every worker runs the same command; restart it after a preemption):

  launch/tpu_pod.sh TPU_NAME ZONE configs/maskgil.py:XL gs://BUCKET/runs/maskgil_xl

Memory per device without running: add --memory-report.

Block ablations (docs/training.md "Block variants"), any size: `configs/maskgil.py:B,no_qknorm`
(no QK-norm) and `configs/maskgil.py:B,prenorm` (LlamaGen's pre-norm instead of post-norm).
"""
from maskgil_jax.configlib import recipes


def get_config(arg: str = "B"):
  size, _, variant = arg.partition(",")
  return recipes.block_variant(recipes.maskgil(size.upper()), variant)
