"""LlamaGen-XL (775M parameters) AR baseline, class-conditional ImageNet 256, trained with
the LlamaGen recipe (configlib/recipes.py `llamagen`) on pre-extracted ten-crop codes.

Mesh: data=1, fsdp=-1 (every device shards parameters and optimizer state).

  python -m maskgil_jax.train --config configs/llamagen_xl.py --workdir gs://BUCKET/runs/llamagen_xl \
      --config.data.path=gs://BUCKET/imagenet_codes_tencrop \
      --config.tokenizer.ckpt=gs://BUCKET/vq_ds16_c2i.pt  # for sample grids

On a TPU pod (every worker runs the same command; restart it after a preemption):

  launch/tpu_pod.sh TPU_NAME ZONE configs/llamagen_xl.py gs://BUCKET/runs/llamagen_xl

Memory per device without running: add --memory-report.
"""
from maskgil_jax.configlib import recipes


def get_config():
  return recipes.llamagen("XL")
