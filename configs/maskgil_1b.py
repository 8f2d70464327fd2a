"""MaskGIL-1B: the XXL size (1.4B parameters), the paper's largest class-conditional model, bf16
compute on fp32 weights, parameters and optimizer state sharded over every device (pure FSDP).
Recipe: configlib/recipes.py `maskgil`.

Mesh: data=1, fsdp=-1 (every device shards parameters and optimizer state).

  python -m maskgil_jax.train --config configs/maskgil_1b.py --workdir gs://BUCKET/runs/maskgil_1b \
      --config.tokenizer.ckpt=gs://BUCKET/vq_ds16_c2i.pt \
      --config.data.tfds_data_dir=gs://BUCKET/tfds

On a TPU pod (every worker runs the same command; restart it after a preemption):

  launch/tpu_pod.sh TPU_NAME ZONE configs/maskgil_1b.py gs://BUCKET/runs/maskgil_1b

Memory per device without running: add --memory-report.
"""
from maskgil_jax.configlib import recipes


def get_config():
  return recipes.maskgil("XXL")
