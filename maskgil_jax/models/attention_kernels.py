"""Fused attention kernels for full-sequence passes, and the choice between them and XLA.

`config.model.attention_kernel` names the kernel (configlib/attention.py): 'auto' takes cuDNN
flash attention on NVIDIA GPUs and Pallas splash attention on TPUs where the dtype and shapes
allow and XLA otherwise (always on CPU, with a logged notice where an accelerator's kernel was
passed over); 'xla', 'cudnn' or 'pallas' forces one and is refused (`ConfigError` naming the
field) where it cannot run. The choice is made once per traced call of the transformer
(`resolve`) and passed down as a static `Kernel` to `attention.attend`: nothing global changes.

Cached decoding always runs XLA, whatever the field says (an explicit kernel is still refused on
the wrong platform, so a config means the same thing in every call). A decode step has one (or a
few) queries against S cache slots: the scores are [B, H, T, S] with T small, the step is bound
by reading the cache, which XLA's fused dot already does at memory speed, and neither kernel
takes its mask in a form that fits: cuDNN's causal mask is aligned to the top-left corner
(query i sees keys <= i), where a decode query at slot `start + i` must see keys <= start + i,
so the mask would go as a dense bias; splash attention runs self-attention (equal lengths),
padded up to a multiple of 128 slots.

Every kernel receives the mask as a `masks.AttentionMask` and builds the form it accepts:
XLA the dense boolean mask, cuDNN `is_causal` plus a padding mask (`cudnn_mask`), splash a
static causal or full mask plus segment ids (`splash_segment_ids`).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from maskgil_jax.configlib.attention import KERNELS, static_refusal
from maskgil_jax.configlib.finalize import ConfigError
from maskgil_jax.models import masks
from maskgil_jax.parallel import rules as rules_lib

log = logging.getLogger(__name__)

FIELD = "config.model.attention_kernel"
PREFERRED = {"nvidia": "cudnn", "tpu": "pallas"}  # what 'auto' tries on each platform
SPLASH_BLOCKS = (512, 256, 128)  # splash tiles tried, largest first (multiples of 128 lanes)
SPLASH_LANES = 128  # splash lengths are multiples of this; others are padded up to one
# 'auto' pads for splash only where the padded length is at most this much longer (the padded
# work is wasted): by XLA's TPU cost model for a v5e chip (bench/tpu_attention.py,
# docs/performance.md) splash padded from 257 to 384 slots (49% longer) still beats XLA's
# attention for every MaskGIL size, forward and backward, and from 376 to 384 by 1.2-1.4x
SPLASH_AUTO_MAX_PADDING = 0.5


@dataclasses.dataclass(frozen=True)
class Kernel:
  """The kernel one attention call runs. A plain (non-pytree) value, so it stays static through
  the layer scan and `jax.checkpoint`; `interpret` runs the Pallas kernel in interpret mode
  (how the tests run the TPU kernel on CPU)."""
  name: str = "xla"
  interpret: bool = False


XLA = Kernel()


class Platform(NamedTuple):
  """What the kernels need to know of the devices: 'cpu', 'nvidia', 'tpu' or another backend
  name, an NVIDIA GPU's compute capability, and whether Pallas runs interpreted (tests)."""
  kind: str
  compute_capability: tuple[int, ...] | None = None
  interpret: bool = False


class Shape(NamedTuple):
  """What the kernels need to know of one attention call."""
  t: int  # query slots
  s: int  # key slots
  head_dim: int
  dtype: str  # the compute dtype of q, k, v
  masked: bool = False  # a key mask (caption padding) is applied
  dropout: bool = False  # attention dropout is on (training with model.attn_dropout > 0)
  decode: bool = False  # a cached decode call


def platform() -> Platform:
  """The platform of the devices the call is traced for: the active mesh's (a TPU slice
  compiled ahead of time from a CPU host, parallel/topology.py) where it differs from the
  default devices', else the default devices' (where the jitted call runs)."""
  dev = jax.devices()[0]
  target = getattr(jax.sharding.get_abstract_mesh(), "abstract_device", None)
  if target is not None and target.platform != dev.platform:
    return Platform(target.platform)
  if dev.platform in ("gpu", "cuda"):
    version = str(getattr(dev.client, "platform_version", "")).lower()
    cc = getattr(dev, "compute_capability", None)
    if "cuda" in version and cc:
      return Platform("nvidia", tuple(int(x) for x in str(cc).split(".")[:2]))
    return Platform("rocm" if "rocm" in version else "gpu")
  return Platform(dev.platform)


def platform_refusal(kernel: str, plat: Platform) -> str | None:
  """Why `kernel` cannot run on this platform at all, or None."""
  if kernel == "cudnn":
    if plat.kind != "nvidia":
      return f"cuDNN flash attention needs an NVIDIA GPU; this process runs on {plat.kind}"
    cc = plat.compute_capability or (0,)
    if cc < (8, 0):
      return (f"cuDNN flash attention needs compute capability 8.0 (Ampere) or newer, not "
              f"{'.'.join(map(str, cc))}")
  if kernel == "pallas" and plat.kind != "tpu":
    return f"Pallas splash attention needs a TPU; this process runs on {plat.kind}"
  return None


def shape_refusal(kernel: str, plat: Platform, shape: Shape) -> str | None:
  """Why `kernel` cannot run this call on this platform, or None."""
  why = platform_refusal(kernel, plat)
  if why or kernel == "xla":
    return why
  max_head_dim = 256 if (plat.compute_capability or (0,)) >= (9, 0) else 128
  why = static_refusal(kernel, shape.dtype, shape.head_dim, shape.dropout, max_head_dim)
  if why:
    return why
  if kernel == "cudnn" and shape.masked and (shape.t % 2 or shape.s % 2):
    # jax 0.10's check_is_flash_attention: a bias in training needs even lengths
    return (f"a padding mask reaches cuDNN as a bias, which needs even sequence lengths "
            f"(T={shape.t}, S={shape.s})")
  if kernel == "pallas" and splash_block(shape.t, shape.s) is None:
    return (f"splash attention runs self-attention, equal query and key lengths (T={shape.t}, "
            f"S={shape.s})")
  return None


def splash_padding_refusal(shape: Shape) -> str | None:
  """Why 'auto' does not pad this call for splash: more padding than SPLASH_AUTO_MAX_PADDING."""
  padded = splash_length(shape.t)
  if padded > shape.t * (1 + SPLASH_AUTO_MAX_PADDING):
    return (f"splash attention would pad {shape.t} slots to {padded}, "
            f"{100 * (padded / shape.t - 1):.0f}% more work than "
            f"{100 * SPLASH_AUTO_MAX_PADDING:.0f}% allows")
  return None


def choose(requested: str, plat: Platform, shape: Shape) -> tuple[Kernel, str | None]:
  """(kernel to run, notice or None) for `config.model.attention_kernel == requested`.

  A pure function of its arguments (the tests pass made-up platforms). Raises `ConfigError`
  naming the field for an explicit kernel that cannot run; 'auto' falls back to XLA instead and
  says why in the notice.
  """
  if requested not in KERNELS:
    raise ConfigError(f"{FIELD}: {requested!r}; one of {KERNELS}")
  if requested in ("cudnn", "pallas"):
    why = platform_refusal(requested, plat) if shape.decode else shape_refusal(
        requested, plat, shape)
    if why:
      raise ConfigError(f"{FIELD}: {requested!r} cannot run here: {why}; use 'auto' or 'xla'")
    return (XLA if shape.decode else Kernel(requested, plat.interpret)), None
  preferred = PREFERRED.get(plat.kind)
  if requested == "xla" or shape.decode or preferred is None:
    return XLA, None
  why = shape_refusal(preferred, plat, shape)
  if not why and preferred == "pallas":
    why = splash_padding_refusal(shape)
  if why:
    return XLA, f"attention_kernel 'auto' runs XLA attention instead of {preferred}: {why}"
  return Kernel(preferred, plat.interpret), None


def resolve(requested: str, shape: Shape) -> Kernel:
  """`choose` on the running platform, logging the notice of an 'auto' fallback (once per
  trace: the choice is made while tracing)."""
  kernel, notice = choose(requested, platform(), shape)
  if notice:
    log.info(notice)
  return kernel


# ---- cuDNN --------------------------------------------------------------------------------
def cudnn_mask(mask: masks.AttentionMask) -> tuple[bool, jax.Array | None]:
  """(is_causal, boolean mask or None): `mask` as cuDNN flash attention takes it.

  The causal part goes as `is_causal`, which cuDNN applies inside the kernel (and uses to skip
  the blocks above the diagonal). Padding goes as a boolean mask, which jax hands to cuDNN as an
  additive bias: the sequence-length form cuDNN also accepts hides the end of each row only,
  while a caption is left-padded, a `key_mask` may hide any slot, and every hidden slot still
  sees itself. That padding mask is the bidirectional mask with the same key mask, so causal &
  padding is exactly the causal mask `masks.attention_mask` builds.
  """
  if mask.mode == "decode":
    raise ValueError("cached decoding runs XLA attention (models/attention_kernels.py says why)")
  causal = mask.mode == "causal"
  if mask.key_mask is None:
    return causal, None
  return causal, masks.attention_mask("bidirectional", mask.t, mask.s, key_mask=mask.key_mask)


def cudnn_attention(q, k, v, mask: masks.AttentionMask, implementation: str = "cudnn"):
  """cuDNN flash attention of q [B, T, Hq, D], k/v [B, S, Hkv, D] (grouped heads as they are).

  `implementation` is 'cudnn' except in the CPU tests, which run these same arguments through
  XLA to check them against the dense-mask path.
  """
  is_causal, m = cudnn_mask(mask)
  return jax.nn.dot_product_attention(q, k, v, mask=m, is_causal=is_causal,
                                      implementation=implementation)


# ---- Pallas splash attention (TPU) --------------------------------------------------------
def splash_length(t: int) -> int:
  """The length splash runs a sequence of `t` slots at: the next multiple of 128."""
  return -(-t // SPLASH_LANES) * SPLASH_LANES


def splash_block(t: int, s: int) -> int | None:
  """The largest tile of SPLASH_BLOCKS that divides the (padded) length, or None where the
  lengths differ (the kernel runs full self-attention here)."""
  if t != s:
    return None
  return next(b for b in SPLASH_BLOCKS if splash_length(t) % b == 0)


def splash_segment_ids(key_mask):
  """[B, S] int32 segment ids for a key mask: 0 on every valid slot, and a distinct id (its
  index + 1) on every hidden one.

  Splash attention lets a query see the keys of its own segment. A valid query then sees every
  valid key, as the dense mask has it; a hidden slot sees only itself, where the dense mask also
  shows it the valid keys. Hidden slots are keys no other query sees, and their own outputs are
  never read (a caption's padded slots give no logits that a loss or decoder uses), so only
  those unused rows differ; the tests compare the valid rows.
  """
  s = key_mask.shape[1]
  ids = jnp.arange(1, s + 1, dtype=jnp.int32)[None]
  return jnp.where(key_mask.astype(bool), 0, ids).astype(jnp.int32)


def splash_attention(q, k, v, mask: masks.AttentionMask, *, interpret: bool = False):
  """Splash attention of q [B, T, Hq, D], k/v [B, S, Hkv, D]; grouped KV heads go to the kernel
  as they are (it maps each query head to its group's key head itself).

  The kernel does not scale the scores, so q is scaled by 1/sqrt(D) first (in fp32). A length
  that is not a multiple of 128 (257 class-conditional slots, 376 caption ones) is padded up to
  one: the padded slots are keys of their own segment (no real query sees them, as hidden
  caption slots) and their query rows are dropped, so the real rows are exact. The kernel
  package is imported here: no other path needs it.
  """
  from jax.experimental.pallas.ops.tpu import splash_attention as splash

  block = splash_block(mask.t, mask.s)
  if mask.mode == "decode" or block is None:
    raise ValueError(f"splash attention runs full self-attention sequences, not mode "
                     f"{mask.mode!r} with T={mask.t}, S={mask.s}")
  t, length = mask.t, splash_length(mask.t)
  key_mask = mask.key_mask
  if length != t:
    pad = lambda a: jnp.pad(a, ((0, 0), (0, length - t), (0, 0), (0, 0)))
    q, k, v = pad(q), pad(k), pad(v)
    valid = (jnp.ones((q.shape[0], t), bool) if key_mask is None
             else key_mask.astype(bool))
    key_mask = jnp.pad(valid, ((0, 0), (0, length - t)))  # padded slots hidden

  sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                            block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                            block_q_dq=block, block_kv_dq=block)
  static = (splash.CausalMask if mask.mode == "causal" else splash.FullMask)((length, length))
  q = (q.astype(jnp.float32) / np.sqrt(q.shape[-1])).astype(q.dtype)
  q, k, v = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))  # [B, heads, length, D]

  def local(q, k, v, *seg):
    kernel = splash.make_splash_mha(splash.MultiHeadMask([static] * q.shape[1]),
                                    block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                    interpret=interpret)
    if not seg:
      return jax.vmap(kernel)(q, k, v)
    return jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=splash.SegmentIds(s, s)))(
        q, k, v, seg[0])

  seg = () if key_mask is None else (splash_segment_ids(key_mask),)
  return jnp.swapaxes(_per_shard(local, q, k, v, seg), 1, 2)[:, :t]


def _per_shard(fn, q, k, v, seg: tuple):
  """`fn(q, k, v, *seg)` on each device's share of the batch and heads.

  XLA cannot partition a Pallas kernel ("Mosaic kernels cannot be automatically partitioned"),
  so under a mesh the kernel runs inside `shard_map` over the axes `parallel/rules.py` gives the
  batch (`act_batch`) and the heads (`act_heads`); each sequence stays whole on its device.
  Where the query and key heads cannot be split alike (fewer key heads than the axis), the heads
  stay whole too.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return fn(q, k, v, *seg)
  rules = rules_lib.active_rules()
  names = ("act_batch", "act_heads", None, None)
  q_spec = rules_lib.logical_to_spec(names, rules, q.shape, mesh)
  kv_spec = rules_lib.logical_to_spec(names, rules, k.shape, mesh)
  if q_spec[1] != kv_spec[1]:
    q_spec = PartitionSpec(q_spec[0], None, None, None)
    kv_spec = PartitionSpec(kv_spec[0], None, None, None)
  seg_specs = tuple(PartitionSpec(q_spec[0], None) for _ in seg)
  return jax.shard_map(fn, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, *seg_specs),
                       out_specs=q_spec, check_vma=False)(q, k, v, *seg)
