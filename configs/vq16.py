"""LlamaGen VQ-16 tokenizer (16,384 x 8 codes, 256px -> 16x16) trained with LlamaGen's recipe.

Adam lr 1e-4 (betas 0.9, 0.95, no weight decay), grad clip 1.0, batch 128, 40 ImageNet epochs,
bf16 compute; L2 + LPIPS + codebook + 0.25 commitment, PatchGAN hinge loss weight 0.5 from step
20,000 (docs/reference.md section 5). LPIPS needs VGG16 + LPIPS head weights (never downloaded).

  python -m maskgil_jax.train --config configs/vq16.py --workdir WORKDIR \
      --config.data.tfds_data_dir=TFDS_DIR \
      --config.tokenizer.loss.lpips_weights=vgg16-397923af.pth,vgg.pth

Check any VQ-16 checkpoint (ours or LlamaGen's vq_ds16_c2i.pt):

  python -m maskgil_jax.vq reconstruct --config configs/vq16.py --ckpt vq_ds16_c2i.pt \
      --images IMAGES_DIR --image_size 256 --out recon.npz
"""
from maskgil_jax import configlib

IMAGENET_TRAIN_IMAGES = 1_281_167


def get_config(preset: str = "vq16"):
  c = configlib.base_config("B", "maskgil", tokenizer=preset)
  c.task = "tokenizer"
  c.model.codebook_size = c.tokenizer.codebook_size  # the generator trained on these codes
  c.batch_size = 128
  c.total_steps = 40 * (IMAGENET_TRAIN_IMAGES // c.batch_size)  # 40 epochs, last batch dropped
  c.data.name = "imagenet2012"
  c.data.image_size = 256
  c.data.random_flip = True
  c.optim.lr = 1e-4
  c.optim.schedule = "constant"
  c.optim.b1, c.optim.b2 = 0.9, 0.95
  c.optim.weight_decay = 0.0  # torch.optim.Adam in LlamaGen's vq_train.py
  c.optim.grad_clip = 1.0
  c.tokenizer.dtype = "bfloat16"  # LlamaGen trains under bf16 autocast
  return c
