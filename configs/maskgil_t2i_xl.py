"""A text-conditional MaskGIL after the paper's 775M model (GPT-XL size; 777.9M here with the
caption MLP and the learned null caption: `python -m maskgil_jax.params --config
configs/maskgil_t2i_xl.py`). The paper publishes little about this model beyond its size and
that it generates at any resolution, so most of what defines this file is borrowed or assumed;
each choice and where it comes from (docs/text_to_image.md has the same table):

  paper     MaskGIL block (bidirectional attention, 2D RoPE, QK-norm, post-norm, MASK token)
  paper     GPT-XL size (36 layers, width 1,280): "775M"
  assumed   MaskGIL's MAR training (AdamW 1e-4, betas (0.9, 0.96), wd 1e-5, arccos masks, label
            smoothing 0.1): the public MaskGIL code's class recipe, carried over to captions
  assumed   FLAN-T5-XL caption features, 120 left-padded slots of 2,048, LlamaGen's caption MLP
            and null caption, caption drop 0.1 (all LlamaGen's text-to-image model)
  assumed   tokenizer: LlamaGen's VQ-16 (its vq_ds16_t2i.pt). The paper's reviews say its text
            model used Chameleon's VQ tokenizer: that variant is `:chameleon` below
  assumed   two stages, 256 px then 512 px from the stage-1 checkpoint (LlamaGen's T2I stages)
  assumed   aspect buckets around each stage's size (ours: how "any resolution" is trained)
  assumed   400,000 steps per stage (ours; no published figure)
  assumed   no random flip (LlamaGen's train_t2i.py does not flip; a caption may say left/right)
  assumed   guidance w = 6.5 (LlamaGen's T2I sampler default s = 7.5) with MaskGIL's linear
            ramp (MaskGIL's class sampler)

`get_config(arg)`: '256' (default, stage 1), '512' (stage 2), 'chameleon' (Chameleon's VQGAN,
8,192 codes of 256, at 512 px buckets: 32x32 tokens for the square; a stage of its own, trained
from scratch; set tokenizer.ckpt to Chameleon's vqgan.ckpt, docs/tokenizer.md).

Captions once through FLAN-T5-XL (resumable, run on every host), then train on the features:

  python -m maskgil_jax.extract_text --config configs/maskgil_t2i_xl.py \\
      --config.data.path=captions.jsonl --config.text.encoder=FLAN_T5_XL_DIR --out gs://B/t5xl
  python -m maskgil_jax.train --config configs/maskgil_t2i_xl.py --workdir gs://B/runs/t2i_256 \\
      --config.data.path=captions.jsonl --config.data.text_features=gs://B/t5xl \\
      --config.tokenizer.ckpt=vq_ds16_t2i.pt
  python -m maskgil_jax.train --config configs/maskgil_t2i_xl.py:512 --workdir gs://B/runs/t2i_512 \\
      --config.data.path=hires.jsonl --config.data.text_features=gs://B/t5xl_hires \\
      --config.tokenizer.ckpt=vq_ds16_t2i.pt --config.ckpt.init_from=gs://B/runs/t2i_256/checkpoints/400000
  python -m maskgil_jax.train --config configs/maskgil_t2i_xl.py:chameleon \\
      --workdir gs://B/runs/t2i_chameleon --config.data.path=hires.jsonl \\
      --config.data.text_features=gs://B/t5xl_hires --config.tokenizer.ckpt=vqgan.ckpt

(without data.text_features the frozen T5 of text.encoder encodes the captions in every step).
On a TPU pod: launch/tpu_pod.sh TPU_NAME ZONE configs/maskgil_t2i_xl.py gs://B/runs/t2i_256.
Memory per device without data or weights: add --memory-report to the train command.
"""
from maskgil_jax.configlib import recipes


def get_config(stage: str = "256"):
  if stage == "chameleon":
    return recipes.maskgil_t2i("XL", "512", tokenizer="chameleon_vqgan")
  return recipes.maskgil_t2i("XL", stage)
