"""LlamaGen's own code as the third side of bench/versus_torch.py (AR sampling and the VQ).

The code is not part of this project: `--reference-llamagen DIR` points to a checkout of
LlamaGen (https://github.com/FoundationVision/LlamaGen, MIT) holding
`autoregressive/models/gpt.py`, `autoregressive/models/generate.py` and
`tokenizer/tokenizer_image/vq_model.py` (and `utils/drop_path.py`, which gpt.py imports); DIR
goes on `sys.path` as LlamaGen's scripts run from its root. Its models are built from our
configs and load the weights our side exported (the export's key names are LlamaGen's), then
run as LlamaGen's sampling and reconstruction scripts run them: `generate` with its
`cfg_scale` (1 + our w), temperature 1, no top-k or top-p, a multinomial draw per token; and
`encode` then `decode_code` for the tokenizer. Eager PyTorch (the scripts' default, no
`--compile`).
"""
from __future__ import annotations

import importlib
import os
import sys

import numpy as np
import torch

import workloads as wl

REQUIRED = ("autoregressive/models/gpt.py", "autoregressive/models/generate.py",
            "tokenizer/tokenizer_image/vq_model.py", "utils/drop_path.py")


def missing_files(directory: str) -> list[str]:
  """The files LlamaGen's code needs that `directory` lacks (empty when it is usable)."""
  return [f for f in REQUIRED if not os.path.isfile(os.path.join(directory, f))]


def import_llamagen(directory: str):
  """(gpt module, generate module, vq_model module) of LlamaGen's code at `directory`."""
  missing = missing_files(directory)
  if missing:
    raise FileNotFoundError(f"{directory} is not a LlamaGen checkout: no {', '.join(missing)}")
  sys.path.insert(0, os.path.abspath(directory))
  return (importlib.import_module("autoregressive.models.gpt"),
          importlib.import_module("autoregressive.models.generate"),
          importlib.import_module("tokenizer.tokenizer_image.vq_model"))


def load(module: torch.nn.Module, weights: dict[str, np.ndarray], extra=()) -> torch.nn.Module:
  """`module` with our weights; the only keys of its own left out are the buffers in `extra`."""
  result = module.load_state_dict(
      {k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, strict=False)
  missing = [k for k in result.missing_keys if k not in extra]
  if missing or result.unexpected_keys:
    raise ValueError(f"weights do not fit LlamaGen's model: missing {missing}, "
                     f"unexpected {result.unexpected_keys}")
  return module.eval()


def gpt_model(gpt, m) -> torch.nn.Module:
  """LlamaGen's c2i Transformer for our config.model `m` (layout 'llamagen'), no dropout."""
  args = gpt.ModelArgs(
      dim=m.dim, n_layer=m.n_layer, n_head=m.n_head, n_kv_head=m.n_kv_head,
      multiple_of=m.multiple_of, ffn_dim_multiplier=m.ffn_dim_multiplier,
      rope_base=m.rope_base, norm_eps=m.norm_eps, token_dropout_p=0.0, attn_dropout_p=0.0,
      resid_dropout_p=0.0, ffn_dropout_p=0.0, drop_path_rate=0.0, num_classes=m.num_classes,
      class_dropout_prob=0.1, model_type="c2i", vocab_size=m.codebook_size,
      cls_token_num=m.cls_token_num, block_size=m.grid_size ** 2)
  return gpt.Transformer(args)


def vq_model(vq_module, t) -> torch.nn.Module:
  """LlamaGen's VQModel for our tokenizer config `t` (its channel width is fixed at 128)."""
  if t.ch != 128:
    raise ValueError(f"LlamaGen's VQ encoder and decoder have 128 channels, the config {t.ch}")
  args = vq_module.ModelArgs(
      codebook_size=t.codebook_size, codebook_embed_dim=t.codebook_dim,
      codebook_l2_norm=t.l2_norm, commit_loss_beta=t.commit_beta,
      encoder_ch_mult=list(t.ch_mult), decoder_ch_mult=list(t.ch_mult),
      z_channels=t.z_channels, dropout_p=0.0)
  return vq_module.VQModel(args)


def build(name: str, size: str, weights: dict[str, np.ndarray], directory: str):
  """(run, 0.0): workload `name` (ar1, ar4 or vq) with LlamaGen's code."""
  gpt, generate, vq_module = import_llamagen(directory)
  if name == "vq":
    config, side = wl.vq_config(size)
    vq = load(vq_model(vq_module, config), weights, extra=("quantize.codebook_used",))
    images = torch.from_numpy(wl.vq_images(side).transpose(0, 3, 1, 2).copy())

    @torch.no_grad()
    def roundtrip():  # as LlamaGen's reconstruction script: encode, then decode the codes
      latent, _, (_, _, indices) = vq.encode(images)
      return vq.decode_code(indices, latent.shape)
    return roundtrip, 0.0
  if name not in wl.REFERENCE_WORKLOADS:
    raise ValueError(f"LlamaGen's code has no {name!r} workload")
  config = wl.workload_config(name, size)
  model = load(gpt_model(gpt, config.model), weights)
  labels = torch.arange(wl.ar_classes(name))
  n = config.model.grid_size ** 2
  return (lambda: generate.generate(model, labels, n, cfg_scale=1.0 + wl.AR_CFG,
                                    temperature=1.0, top_k=0, top_p=1.0,
                                    sample_logits=True)), 0.0
