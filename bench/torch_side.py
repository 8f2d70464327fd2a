"""The PyTorch side of bench/versus_torch.py: the reference code's loops on the PyTorch twin.

Each function does what the reference does for one workload, on `interop/torch_model.py`
(the reference architecture, loaded with the same weights as the JAX side):
- `train_step`: MaskGIL's trainer step: arccos mask ratio per sample, MASK at masked positions,
  label drop 0.1, cross-entropy with label smoothing over every position, backward, gradient
  clipping at 1.0, AdamW.
- `mar_sample`: MaskGIL's sampler: per step a guided forward of the doubled batch, a draw from
  softmax(logits / temperature), confidence = probability of the drawn token + annealed Gumbel
  noise, the top-k still-masked positions committed.
- `ar_sample`: LlamaGen's `generate`: prefill of the class prefix, then one token per step
  through the KV cache with guidance on the doubled batch, a multinomial draw each step.
- `vq_roundtrip`: LlamaGen's VQ encode then decode of NCHW images.

`build(name, size, weights)` makes one workload of bench/workloads.py runnable on the twin
loaded with our weights (the state dict our side exported).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

import workloads as wl
from maskgil_jax.interop import torch_model as tm


def make_train_step(model: tm.Transformer, lr: float = 1e-4, betas=(0.9, 0.96),
                    weight_decay: float = 1e-5, label_smoothing: float = 0.1,
                    label_drop: float = 0.1, grad_clip: float = 1.0):
  """A closure running one MaskGIL train step on (codes [B, L], labels [B])."""
  c = model.config
  opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
  model.train()

  def step(codes, labels):
    b, n = codes.shape
    ratio = torch.arccos(torch.rand(b)) / (math.pi / 2)
    masked = torch.rand(b, n) < ratio[:, None]
    inputs = torch.where(masked, torch.full_like(codes, c.mask_id), codes)
    drop = torch.rand(b) < label_drop
    labels = torch.where(drop, torch.full_like(labels, c.null_label), labels)
    logits = model.mar_logits(inputs, labels)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1),
                           label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.detach()

  return step


@torch.no_grad()
def mar_sample(model: tm.Transformer, labels, *, steps: int = 8, cfg_scale: float = 3.0,
               temperature: float = 1.0, choice_temperature: float = 4.5):
  """MaskGIL sampling with guidance (linear ramp) and Gumbel-noised confidences."""
  c = model.config
  model.eval()
  b, n = labels.shape[0], c.num_image_tokens
  tokens = torch.full((b, n), c.mask_id, dtype=torch.long)
  null = torch.full_like(labels, c.null_label)
  for t, k in enumerate(tm.tokens_per_step("arccos", steps, n)):
    w = cfg_scale * t / max(steps - 1, 1)
    both = model.mar_logits(tokens.repeat(2, 1), torch.cat([labels, null]))
    cond, uncond = both[..., :c.codebook_size].chunk(2)
    logits = (1 + w) * cond - w * uncond
    prob = torch.softmax(logits / temperature, dim=-1)
    picks = torch.distributions.Categorical(probs=prob).sample()
    conf = torch.log(torch.gather(prob, 2, picks[..., None])[..., 0])
    gumbel = -torch.log(-torch.log(torch.rand_like(conf).clamp_min(1e-20)))
    conf = conf + choice_temperature * (1 - t / max(steps - 1, 1)) * gumbel
    masked = tokens == c.mask_id
    conf = conf.masked_fill(~masked, -math.inf)
    k = min(k, int(masked.sum(dim=1).min()))
    if k > 0:
      chosen = conf.topk(k, dim=1).indices
      tokens.scatter_(1, chosen, picks.gather(1, chosen))
  return tokens


@torch.no_grad()
def ar_sample(model: tm.Transformer, labels, *, cfg_scale: float = 1.0,
              temperature: float = 1.0):
  """LlamaGen next-token sampling with guidance on the doubled batch and a KV cache."""
  c = model.config
  model.eval()
  b = labels.shape[0]
  cache = tm.KVCache(model, 2 * b)
  null = torch.full_like(labels, c.null_label)
  out, token = [], None
  for _ in range(c.num_image_tokens):
    if token is None:
      logits = model.decode(None, torch.cat([labels, null]), cache)[:, -1]
    else:
      logits = model.decode(token.repeat(2)[:, None], None, cache)[:, -1]
    cond, uncond = logits.chunk(2)
    logits = (1 + cfg_scale) * cond - cfg_scale * uncond
    probs = torch.softmax(logits / temperature, dim=-1)
    token = torch.multinomial(probs, 1)[:, 0]
    out.append(token)
  return torch.stack(out, dim=1)


@torch.no_grad()
def vq_roundtrip(vq: tm.VQModel, images):
  """Codes and reconstructions of NCHW images in [-1, 1]."""
  vq.eval()
  codes = vq.encode(images)
  return codes, vq.decode_code(codes)


def load(module: torch.nn.Module, weights: dict[str, np.ndarray]) -> torch.nn.Module:
  module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()},
                         strict=True)
  return module


def build(name: str, size: str, weights: dict[str, np.ndarray]):
  """(run, 0.0): workload `name` on the twin (nothing to compile)."""
  if name == "vq":
    config, side = wl.vq_config(size)
    vq = load(tm.VQModel(config.to_dict()), weights)
    images = torch.from_numpy(wl.vq_images(side).transpose(0, 3, 1, 2).copy())
    return (lambda: vq_roundtrip(vq, images)), 0.0
  config = wl.workload_config(name, size)
  twin = load(tm.Transformer(config.model.to_dict()), weights)
  if name == "train":
    codes, labels = wl.train_batch(config)
    step = make_train_step(twin)
    codes = torch.from_numpy(codes.reshape(len(codes), -1)).long()
    labels = torch.from_numpy(labels).long()
    return (lambda: step(codes, labels)), 0.0
  if name == "mar":
    labels = torch.arange(wl.MAR_IMAGES)
    return (lambda: mar_sample(twin, labels, steps=wl.MAR_STEPS, cfg_scale=wl.MAR_CFG)), 0.0
  labels = torch.arange(wl.ar_classes(name))
  return (lambda: ar_sample(twin, labels, cfg_scale=wl.AR_CFG)), 0.0
