"""The paper's tokenizer study: MaskGIL-B (the MAR setting) and LlamaGen-B (the AR setting) on
each of the four tokenizers, with their released weights (docs/tokenizer.md says where each is
published and how to convert it). The generator names its tokenizer; its vocabulary (codebook
size, MASK id = codebook size) and grid (256 px / 16 = 16x16 for all four) follow from it.

`get_config("GENERATOR,TOKENIZER")`: GENERATOR maskgil_b | llamagen_b, TOKENIZER one of
  vq16       LlamaGen VQ-16, 16,384 codes            (vq_ds16_c2i.pt)
  maskgit    taming VQGAN f16, 1,024 codes           (MaskGIT-pytorch last.ckpt)
  chameleon  Chameleon VQGAN f16, 8,192 codes        (Chameleon vqgan.ckpt)
  magvit2    Open-MAGVIT2 f16, 262,144 codes (LFQ)   (imagenet_256_L.ckpt), generator with
             factorized tokens (6 + 12 bits, Open-MAGVIT2's own AR model's choice)
  magvit2_flat  the same tokenizer, generator with one flat 262,144-row table and head

The transformer is B in every run. With flat 2^18-row embedding and head the magvit2 generator
would hold 488M parameters (4.4x the 16k-code model, its extra weights all in the two tables),
so `magvit2` factorizes each code into two sub-tokens as Open-MAGVIT2's AR model does
(models/factorized.py, docs/tokenizer.md): 105M parameters, the same transformer as the
others plus 2 small intra-position blocks. `magvit2_flat` keeps the flat variant for
comparison.

MAR (images tokenized on the fly by the frozen tokenizer; any of the four files directly, or a
`maskgil_jax.convert` output):

  python -m maskgil_jax.train --config configs/tokenizer_study.py:maskgil_b,vq16 \
      --workdir gs://BUCKET/runs/study_maskgil_b_vq16 --config.tokenizer.ckpt=vq_ds16_c2i.pt
  python -m maskgil_jax.train --config configs/tokenizer_study.py:maskgil_b,maskgit \
      --workdir gs://BUCKET/runs/study_maskgil_b_maskgit --config.tokenizer.ckpt=last.ckpt
  python -m maskgil_jax.train --config configs/tokenizer_study.py:maskgil_b,chameleon \
      --workdir gs://BUCKET/runs/study_maskgil_b_chameleon --config.tokenizer.ckpt=vqgan.ckpt
  python -m maskgil_jax.train --config configs/tokenizer_study.py:maskgil_b,magvit2 \
      --workdir gs://BUCKET/runs/study_maskgil_b_magvit2 \
      --config.tokenizer.ckpt=imagenet_256_L.ckpt

AR (LlamaGen's recipe trains on ten-crop codes extracted once per tokenizer):

  python -m maskgil_jax.extract_codes --config configs/tokenizer_study.py:llamagen_b,maskgit \
      --config.tokenizer.ckpt=last.ckpt --out gs://BUCKET/codes/maskgit
  python -m maskgil_jax.train --config configs/tokenizer_study.py:llamagen_b,maskgit \
      --workdir gs://BUCKET/runs/study_llamagen_b_maskgit \
      --config.data.path=gs://BUCKET/codes/maskgit --config.tokenizer.ckpt=last.ckpt

  and the same with vq16 (vq_ds16_c2i.pt), chameleon (vqgan.ckpt) and magvit2
  (imagenet_256_L.ckpt) in place of maskgit.

All runs add `--config.data.tfds_data_dir=gs://BUCKET/tfds` for ImageNet; on a TPU pod use
launch/tpu_pod.sh with the same config argument.
"""
from maskgil_jax.configlib import recipes
from maskgil_jax.configlib.tokenizer import RELEASES

GENERATORS = {"maskgil_b": lambda tok: recipes.maskgil("B", tok),
              "llamagen_b": lambda tok: recipes.llamagen("B", tok)}
TOKENIZERS = {r.study: r.preset for r in RELEASES}
TOKENIZERS["magvit2_flat"] = TOKENIZERS["magvit2"]  # the same codes, one flat table and head
# Open-MAGVIT2's asymmetric token factorization of its 18-bit LFQ codes (2^6 x 2^12)
FACTORIZATION = {"magvit2": (6, 12)}


def get_config(arg: str = "maskgil_b,vq16"):
  generator, _, tokenizer = arg.partition(",")
  if generator not in GENERATORS or tokenizer not in TOKENIZERS:
    raise ValueError(f"tokenizer study {arg!r}: use GENERATOR,TOKENIZER with GENERATOR in "
                     f"{sorted(GENERATORS)} and TOKENIZER in {sorted(TOKENIZERS)}")
  c = GENERATORS[generator](TOKENIZERS[tokenizer])
  c.model.token_factorization = FACTORIZATION.get(tokenizer, ())
  return c
