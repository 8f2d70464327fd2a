"""MaskGIL-XL (775M parameters), class-conditional ImageNet 256: the paper's bidirectional LLaMA
(2D RoPE, QK-norm, post-norm) trained with the MaskGIL recipe (configlib/recipes.py `maskgil`).

Mesh: data=1, fsdp=-1 (every device shards parameters and optimizer state).

  python -m maskgil_jax.train --config configs/maskgil_xl.py --workdir gs://BUCKET/runs/maskgil_xl \
      --config.tokenizer.ckpt=gs://BUCKET/vq_ds16_c2i.pt \
      --config.data.tfds_data_dir=gs://BUCKET/tfds

On a TPU pod (every worker runs the same command; restart it after a preemption):

  launch/tpu_pod.sh TPU_NAME ZONE configs/maskgil_xl.py gs://BUCKET/runs/maskgil_xl

Memory per device without running: add --memory-report.
"""
from maskgil_jax.configlib import recipes


def get_config():
  return recipes.maskgil("XL")
