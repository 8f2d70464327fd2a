"""MaskGIL-L (343M parameters), class-conditional ImageNet 256: the paper's bidirectional LLaMA
(2D RoPE, QK-norm, post-norm) trained with the MaskGIL recipe (configlib/recipes.py `maskgil`).

Mesh: data=-1 (pure data parallel; parameters replicated).

  python -m maskgil_jax.train --config configs/maskgil_l.py --workdir gs://BUCKET/runs/maskgil_l \
      --config.tokenizer.ckpt=gs://BUCKET/vq_ds16_c2i.pt \
      --config.data.tfds_data_dir=gs://BUCKET/tfds

On a TPU pod (every worker runs the same command; restart it after a preemption):

  launch/tpu_pod.sh TPU_NAME ZONE configs/maskgil_l.py gs://BUCKET/runs/maskgil_l

Memory per device without running: add --memory-report.
"""
from maskgil_jax.configlib import recipes


def get_config():
  return recipes.maskgil("L")
