"""What every decoder shares: the settings pytree, classifier-free guidance, token sampling.

Conventions (one user-facing set, converted to each reference where they differ):
- `cfg_scale` is w in MaskGIL's form logits = (1 + w) * cond - w * uncond. LlamaGen writes the
  same combination as uncond + s * (cond - uncond) with s = 1 + w, so LlamaGen's
  `--cfg-scale 4.0` is w = 3.0 here, and its recommended 2.0 is w = 1.0. w = 0 is no guidance
  (and no batch doubling).
- `temperature` divides the logits in every decoder (LlamaGen's convention). MaskGIL's
  `sm_temp` multiplies them, so sm_temp = 1 / temperature. temperature = 0 means greedy
  (argmax); the other draws still happen, so shapes and programs are the same.
- top-k (0 = off) then top-p (1 = off) filter the tempered logits, in LlamaGen's order.

Numeric settings are traced (changing them does not recompile); the ones that change the
program's structure (steps, schedules, guided, ar_tokens) are static pytree metadata.

Randomness is per sample: decoders take one key per row (or one key, split into rows), and
every draw of row b comes from row b's key alone, so a sample does not depend on which batch,
position or device it was drawn in.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

from maskgil_jax.configlib import ConfigError
from maskgil_jax.decode.schedules import SCHEDULES
from maskgil_jax.models import factorized

CFG_SCHEDULES = ("linear", "constant")
# 'spread': the schedule of `steps` steps over the tokens AR left (ours); 'head': the full-grid
# schedule from its first step, each step capped by what is left (the reference code's way);
# 'tail': the full-grid schedule, its steps that AR's tokens cover skipped (decode/hybrid.py)
HYBRID_SCHEDULES = ("spread", "head", "tail")
# the config.decode fields a DecodeSettings is made of: every decoder's, then the hybrid's own
FIELDS = ("steps", "schedule", "cfg_scale", "cfg_schedule", "temperature", "choice_temperature",
          "top_k", "top_p")
HYBRID_FIELDS = ("ar_tokens", "ar_cfg_scale", "ar_temperature", "hybrid_schedule")


def _finite(x) -> bool:
  """A real number that is neither NaN nor infinite (a string is not a number)."""
  if isinstance(x, str):
    return False
  try:
    return math.isfinite(float(x))
  except (TypeError, ValueError):
    return False


@struct.dataclass
class DecodeSettings:
  cfg_scale: jax.Array  # w, MaskGIL convention (see module docstring)
  temperature: jax.Array  # divides the logits; 0 = greedy
  choice_temperature: jax.Array  # MAR: scale of the Gumbel noise on confidences (4.5)
  top_k: jax.Array  # 0 = off
  top_p: jax.Array  # 1 = off
  steps: int = struct.field(pytree_node=False, default=8)  # MAR steps
  schedule: str = struct.field(pytree_node=False, default="arccos")  # MAR mask schedule
  cfg_schedule: str = struct.field(pytree_node=False, default="linear")  # MAR: ramp or constant
  guided: bool = struct.field(pytree_node=False, default=True)  # double the batch for CFG
  ar_tokens: int = struct.field(pytree_node=False, default=128)  # hybrid: tokens AR writes
  # hybrid: the AR half's own guidance w and temperature (LlamaGen's, not MaskGIL's, settings)
  ar_cfg_scale: jax.Array = 1.0
  ar_temperature: jax.Array = 1.0
  ar_guided: bool = struct.field(pytree_node=False, default=True)
  # hybrid: how the MAR half schedules the tokens AR left (see HYBRID_SCHEDULES)
  hybrid_schedule: str = struct.field(pytree_node=False, default="spread")

  @classmethod
  def create(cls, *, cfg_scale=3.0, temperature=1.0, choice_temperature=4.5, top_k=0,
             top_p=1.0, steps=8, schedule="arccos", cfg_schedule="linear",
             ar_tokens=128, ar_cfg_scale=1.0, ar_temperature=1.0,
             hybrid_schedule="spread") -> "DecodeSettings":
    """Checked settings; guidance is switched on exactly when cfg_scale is not 0. Every
    number must be finite: a NaN or infinite guidance scale or temperature turns every logit
    into NaN, and the decode would return all-zero tokens without a word."""
    numbers = dict(cfg_scale=cfg_scale, temperature=temperature,
                   choice_temperature=choice_temperature, top_p=top_p,
                   ar_cfg_scale=ar_cfg_scale, ar_temperature=ar_temperature)
    for field, value in numbers.items():
      if not _finite(value):
        raise ConfigError(f"config.decode.{field}: must be a finite number, got {value!r}")
    checks = [
        (isinstance(steps, int) and steps >= 1, "steps", f"must be an int >= 1, got {steps!r}"),
        (schedule in SCHEDULES, "schedule", f"{schedule!r}; one of {SCHEDULES}"),
        (cfg_schedule in CFG_SCHEDULES, "cfg_schedule",
         f"{cfg_schedule!r}; one of {CFG_SCHEDULES}"),
        (temperature >= 0, "temperature", f"must be >= 0 (0 = greedy), got {temperature}"),
        (choice_temperature >= 0, "choice_temperature", f"must be >= 0, got {choice_temperature}"),
        (isinstance(top_k, int) and top_k >= 0, "top_k", f"must be an int >= 0, got {top_k!r}"),
        (0 < top_p <= 1, "top_p", f"must be in (0, 1], got {top_p}"),
        (isinstance(ar_tokens, int) and ar_tokens >= 0, "ar_tokens",
         f"must be an int >= 0, got {ar_tokens!r}"),
        (ar_temperature >= 0, "ar_temperature", f"must be >= 0 (0 = greedy), got {ar_temperature}"),
        (hybrid_schedule in HYBRID_SCHEDULES, "hybrid_schedule",
         f"{hybrid_schedule!r}; one of {HYBRID_SCHEDULES}" + (
             " ('truncated' was renamed 'tail', what it does; the reference code's schedule "
             "is 'head')" if hybrid_schedule == "truncated" else "")),
    ]
    for ok, field, msg in checks:
      if not ok:
        raise ConfigError(f"config.decode.{field}: {msg}")
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    return cls(f32(cfg_scale), f32(temperature), f32(choice_temperature),
               jnp.asarray(top_k, jnp.int32), f32(top_p), steps=steps, schedule=schedule,
               cfg_schedule=cfg_schedule, guided=float(cfg_scale) != 0.0, ar_tokens=ar_tokens,
               ar_cfg_scale=f32(ar_cfg_scale), ar_temperature=f32(ar_temperature),
               ar_guided=float(ar_cfg_scale) != 0.0, hybrid_schedule=hybrid_schedule)

  def ar_half(self) -> "DecodeSettings":
    """The settings the hybrid's AR half decodes with: its own guidance and temperature."""
    return self.replace(cfg_scale=self.ar_cfg_scale, temperature=self.ar_temperature,
                        guided=self.ar_guided)

  @classmethod
  def from_config(cls, decode_cfg) -> "DecodeSettings":
    """Settings from `config.decode`."""
    return cls.create(**{f: decode_cfg[f] for f in FIELDS + HYBRID_FIELDS})


# ---- classifier-free guidance by batch doubling ---------------------------------------------
# Rows are interleaved (cond 0, uncond 0, cond 1, ...) so that each sample's two rows stay on
# the device that holds the sample when the batch is sharded.

def doubled(x):
  """[B, ...] -> [2B, ...]: every row twice."""
  return jnp.repeat(x, 2, axis=0)


def guide(logits, w):
  """[2B, ...] interleaved logits -> [B, ...]: (1 + w) * cond - w * uncond."""
  pairs = logits.reshape((-1, 2) + logits.shape[1:])
  cond, uncond = pairs[:, 0], pairs[:, 1]
  return cond + w * (cond - uncond)


# ---- sampling -------------------------------------------------------------------------------

def row_keys(key, batch: int):
  """One key per sample: `key` split `batch` ways, or `key` itself if it holds one per row."""
  typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  if key.ndim == (0 if typed else 1):
    return jax.random.split(key, batch)
  if key.shape[0] != batch:
    raise ValueError(f"{key.shape[0]} keys for a batch of {batch}")
  return key


def fold_rows(keys, data: int):
  """Every row's key folded with `data` (a step or position)."""
  return jax.vmap(lambda k: jax.random.fold_in(k, data))(keys)


def filter_logits(logits, top_k, top_p):
  """Logits [..., V] with all but the top-k, then all but the top-p mass, set to -inf.

  Thresholds are values, so ties at the threshold are kept (as LlamaGen's top-k). Skipped
  entirely (no sort) when both filters are off.
  """
  def apply(x):
    v = x.shape[-1]
    desc = -jnp.sort(-x, axis=-1)
    k = jnp.where(top_k > 0, jnp.minimum(top_k, v), v)
    kept = jnp.arange(v) < k
    desc = jnp.where(kept, desc, -jnp.inf)
    # top-p: a token stays while the mass before it is <= top_p (LlamaGen; the first stays)
    probs = jax.nn.softmax(desc, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    kept = kept & ((mass_before <= top_p) | (top_p >= 1.0))
    n_kept = jnp.maximum(jnp.sum(kept, axis=-1, keepdims=True), 1)
    threshold = jnp.take_along_axis(desc, n_kept - 1, axis=-1)
    return jnp.where(x < threshold, -jnp.inf, x)

  return jax.lax.cond((top_k > 0) | (top_p < 1.0), apply, lambda x: x, logits)


def categorical(keys, logits):
  """One draw per position from softmax(logits [B, ..., V]), row b with keys[b].

  Inverse-CDF sampling: one uniform number per position against the running sum of the
  probabilities. `jax.random.categorical` draws V Gumbel numbers per position instead, which
  on a 16,384-code vocabulary costs more than the rest of a MAR step's sampling and ranking
  (docs/performance.md). Tokens of probability 0 (filtered) are never drawn.
  """
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  cdf = jnp.cumsum(probs, axis=-1)
  tiny = jnp.finfo(jnp.float32).tiny
  u = jax.vmap(lambda k: jax.random.uniform(k, logits.shape[1:-1], jnp.float32, tiny, 1.0))(keys)
  drawn = jnp.sum(cdf < (u * cdf[..., -1])[..., None], axis=-1)
  return jnp.minimum(drawn, logits.shape[-1] - 1)


def sample_tokens(keys, logits, settings: DecodeSettings):
  """(tokens [B, ...], log-probability of each under the distribution sampled) for logits
  [B, ..., V], row b drawn with keys[b].

  Temperature divides, top-k/top-p filter, then a categorical draw; temperature 0 takes the
  argmax and scores it under the untempered, filtered distribution.
  """
  t = settings.temperature
  scaled = filter_logits(logits / jnp.where(t > 0, t, 1.0), settings.top_k, settings.top_p)
  drawn = categorical(keys, scaled)
  tokens = jnp.where(t > 0, drawn, jnp.argmax(scaled, axis=-1)).astype(jnp.int32)
  logp = jax.nn.log_softmax(scaled, axis=-1)
  return tokens, jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]


def sample_factorized(model, h, keys, settings: DecodeSettings, w=None):
  """(codes [B, ...], log p of each) drawn from a factorized model's hidden states h (its
  output, models/factorized.py): s0 from its logits, then s1 from its logits given the drawn
  s0, as Open-MAGVIT2's sampler. With guidance weight `w`, h holds interleaved (cond, uncond)
  row pairs [2B, ..., D]: each sub-token's logits are guided alike and the drawn s0 is fed to
  both rows of its pair. log p = log p(s0) + log p(s1 | s0), each under the tempered, filtered
  distribution it was drawn from (top-k / top-p apply per sub-token)."""
  guided = (lambda l: guide(l, w)) if w is not None else (lambda l: l)
  s0, logp0 = sample_tokens(fold_rows(keys, 0), guided(model.sub_logits(h)), settings)
  _, l1 = model.sub_logits(h, doubled(s0) if w is not None else s0)
  s1, logp1 = sample_tokens(fold_rows(keys, 1), guided(l1), settings)
  return factorized.join(s0, s1, model.factorization), logp0 + logp1
