"""LlamaGen AR baseline, class-conditional ImageNet 256, trained with the LlamaGen recipe
(configlib/recipes.py `llamagen`) on pre-extracted ten-crop codes, one file for every size:
`configs/llamagen.py:B|L|XL|XXL` (111M, 343M, 775M, 1.4B parameters).

Mesh: B and L data=-1 (pure data parallel; parameters replicated); XL and XXL data=1, fsdp=-1
(every device shards parameters and optimizer state).

  python -m maskgil_jax.train --config configs/llamagen.py:B --workdir gs://BUCKET/runs/llamagen_b \
      --config.data.path=gs://BUCKET/imagenet_codes_tencrop \
      --config.tokenizer.ckpt=gs://BUCKET/vq_ds16_c2i.pt  # for sample grids

On a TPU pod (every worker runs the same command; restart it after a preemption):

  launch/tpu_pod.sh TPU_NAME ZONE configs/llamagen.py:XXL gs://BUCKET/runs/llamagen_xxl

Memory per device without running: add --memory-report.
"""
from maskgil_jax.configlib import recipes


def get_config(size: str = "B"):
  return recipes.llamagen(size.upper())
