"""`python -m maskgil_jax.export --workdir DIR --layout L --out FILE`: PyTorch weights out.

  python -m maskgil_jax.export --workdir runs/maskgil_b --layout native --out gpt.safetensors
  python -m maskgil_jax.export --workdir runs/llamagen_b --layout llamagen --out c2i_B.pt --ema
  python -m maskgil_jax.export --workdir runs/vq16 --layout llamagen --out vq_ds16_c2i.pt

Reads the newest readable checkpoint of a training run or `maskgil_jax.convert` output (or
`--step N`; `--ema` for the EMA parameters) onto the host CPU, whatever mesh wrote it, and
writes one `.pt` or `.safetensors` file (`--format`, otherwise from the suffix):
- `llamagen`: LlamaGen's key names, `{"model": sd}`; GPTs load with strict=True into
  LlamaGen's `autoregressive/models/gpt.py`, tokenizers into its `VQModel` (buffer included).
- `maskgil-reference`: the public MaskGIL code's names, `{"model_state_dict": sd}` (its loaders
  read that entry); a tokenizer exports as for `llamagen`, which MaskGIL reuses.
- `taming`, `open-magvit2`: a taming-kind (MaskGIT / Chameleon VQGAN) or magvit2-kind
  tokenizer as `{"state_dict": sd}`, the Lightning entry their loaders read (no loss keys),
  also as a `.ckpt` file, the name their releases use. `open-magvit2` also writes the
  weights' EMA copy (`model_ema.<key without dots>`, after the weights, as LitEma names
  them): its configs set `use_ema`, and its scripts then take that copy, which would
  otherwise be the model's random initialisation.
- `native`: any of our models (QK-norm, post-norm, 2D RoPE, ...), for
  `maskgil_jax/interop/torch_model.py`.
Every file carries the run's config as metadata, so `torch_model.load_transformer(FILE)` needs
nothing else. Tensors are float32 unless `--dtype bfloat16` (the VQ usage buffer stays float32).
The file appears only when complete; an existing `--out` is kept unless `--overwrite`.
"""
from __future__ import annotations

import pathlib

import jax
import ml_dtypes
import numpy as np

from maskgil_jax import checkpoints, cli, loading
from maskgil_jax.configlib import ConfigError
from maskgil_jax.configlib.tokenizer import RELEASES
from maskgil_jax.interop import gpt_names, names, tokenizer_names, torch_io, vq_names
from maskgil_jax.models.transformer import Transformer
from maskgil_jax.models.vq import VQModel

LAYOUTS = ("llamagen", "maskgil-reference", "native", "taming", "open-magvit2")
# the tokenizer kinds each reference layout can hold (native holds any)
_TOKENIZER_LAYOUTS = {**{r.export: (r.kind,) for r in RELEASES}, "maskgil-reference": ("vq",)}
FORMATS = {".pt": "pt", ".pth": "pt", ".ckpt": "pt", ".safetensors": "safetensors"}
LIGHTNING_LAYOUTS = ("taming", "open-magvit2")  # the layouts a Lightning `.ckpt` can hold
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}
# where each layout's reference GPT loaders look for the state dict inside a .pt file
_PT_ENTRY = {"llamagen": "model", "maskgil-reference": "model_state_dict", "native": "model",
             "taming": "state_dict", "open-magvit2": "state_dict"}  # Lightning's entry

def on_host(abstract):
  """`abstract` with every array placed on the first CPU device, so a checkpoint of any mesh
  restores into host memory (no accelerator memory, no matching device count needed)."""
  cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=cpu), abstract)


def restore_model(workdir, step: int | None = None, ema: bool = False):
  """(module, config, kind) of a checkpoint: kind 'tokenizer' for a `task='tokenizer'` run,
  'transformer' otherwise."""
  config = checkpoints.restore_config(workdir, step)
  kind = "tokenizer" if config.get("task", "generator") == "tokenizer" else "transformer"
  if kind == "tokenizer":
    abstract = loading.abstract_tokenizer(config.tokenizer)
  else:
    abstract = loading.abstract_generator(config.model)
  module = checkpoints.restore_params(workdir, on_host(abstract), step=step, ema=ema)
  return module, config, kind


def tokenizer_state_dict(model: VQModel, layout: str, dtype) -> dict[str, np.ndarray]:
  """The reference state dict of the tokenizer's family (our keys are the reference's in
  every layout: LlamaGen's, taming's or Open-MAGVIT2's)."""
  kinds = _TOKENIZER_LAYOUTS.get(layout)
  if kinds is not None and model.spec.kind not in kinds:
    raise ConfigError(f"config.tokenizer.kind: {model.spec.kind!r} has no counterpart in the "
                      f"{layout} layout (it holds {', '.join(kinds)}); use --layout native")
  sd = tokenizer_names.export_tokenizer_state_dict(model)
  return {k: v if k == vq_names.BUFFER_KEY else v.astype(dtype) for k, v in sd.items()}


def transformer_state_dict(model: Transformer, config, layout: str, dtype) -> dict[str, np.ndarray]:
  if layout in _TOKENIZER_LAYOUTS and layout not in ("llamagen", "maskgil-reference"):
    raise ConfigError(f"--layout {layout} is a tokenizer layout; this checkpoint is a generator")
  if layout != "native":
    gpt_names.check_reference_architecture(config.model, layout.replace("-", "_"))
  return names.export_state_dict(model, gpt_names.gpt_rules(config.model), dtype=dtype)


def check_output(out: pathlib.Path, fmt: str | None, overwrite: bool,
                 layout: str | None = None) -> None:
  """A user error for an --out that cannot be written as asked (before any work is done)."""
  suffix_format = FORMATS.get(out.suffix)
  if suffix_format is None:
    raise cli.UsageError(f"--out {out}: use a .pt, .pth, .ckpt or .safetensors name")
  if out.suffix == ".ckpt" and layout is not None and layout not in LIGHTNING_LAYOUTS:
    raise cli.UsageError(f"--out {out}: a .ckpt is a Lightning checkpoint, which the "
                         f"{layout} layout is not; use .pt or .safetensors (or --layout "
                         f"{' / '.join(LIGHTNING_LAYOUTS)})")
  if fmt is not None and fmt != suffix_format:
    raise cli.UsageError(f"--format {fmt} does not match the --out suffix {out.suffix!r}")
  cli.check_new_output(out, overwrite=overwrite)


def export(workdir, layout: str, out, *, fmt: str | None = None, step: int | None = None,
           ema: bool = False, dtype: str = "float32", overwrite: bool = False) -> dict:
  """Write the checkpoint in `workdir` to `out`; returns a summary (kind, tensors, parameters)."""
  if layout not in LAYOUTS:
    raise cli.UsageError(f"--layout {layout!r}; one of {LAYOUTS}")
  out = pathlib.Path(out)
  check_output(out, fmt, overwrite, layout)
  module, config, kind = restore_model(workdir, step, ema)
  if kind == "tokenizer":
    state_dict = tokenizer_state_dict(module, layout, DTYPES[dtype])
  else:
    state_dict = transformer_state_dict(module, config, layout, DTYPES[dtype])
  metadata = {torch_io.META_KIND: kind, torch_io.META_LAYOUT: layout,
              torch_io.META_CONFIG: config.to_json_best_effort()}
  wrap = _PT_ENTRY[layout]
  if kind == "tokenizer" and layout in ("llamagen", "maskgil-reference", "native"):
    wrap = "model"  # MaskGIL loads LlamaGen's VQ
  parameters = int(sum(v.size for k, v in state_dict.items() if k != vq_names.BUFFER_KEY))
  tensors = len(state_dict)
  if layout == "open-magvit2":
    state_dict = with_ema_copy(state_dict)
  out.parent.mkdir(parents=True, exist_ok=True)  # as convert does; made only once all is read
  torch_io.save_state_dict(state_dict, out, wrap=wrap, metadata=metadata)
  return dict(kind=kind, tensors=tensors, parameters=parameters)


def with_ema_copy(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The weights, then LitEma's copy of each (`model_ema.<key without dots>`), in that
  order: Open-MAGVIT2's transformer-stage loader maps each EMA key back through the plain
  key it has already seen."""
  ema = {tokenizer_names.EMA_PREFIX + k.replace(".", ""): v for k, v in state_dict.items()}
  return {**state_dict, **ema}


def parser() -> cli.Parser:
  p = cli.Parser("export", __doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True, help="training run, convert output or one step "
                 "folder")
  p.add_argument("--step", type=int, help="checkpoint step (default: the newest readable)")
  p.add_argument("--ema", action="store_true", help="export the EMA parameters")
  p.add_argument("--layout", required=True, choices=LAYOUTS, help="key names and file layout")
  p.add_argument("--format", choices=sorted(set(FORMATS.values())),
                 help="file format (default: from the --out suffix)")
  p.add_argument("--out", required=True, help="the .pt / .pth / .safetensors file to write")
  p.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                 help="dtype of the written tensors")
  p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
  return p


def _main(argv) -> int:
  a = parser().parse(argv)
  info = export(a.workdir, a.layout, a.out, fmt=a.format, step=a.step, ema=a.ema,
                dtype=a.dtype, overwrite=a.overwrite)
  cli.summary(f"exported {info['kind']} ({info['tensors']} tensors, {info['parameters']:,} "
              f"parameters, {a.dtype}) in the {a.layout} layout to {a.out}")
  return 0


main = cli.entry(_main, __name__)  # last: run as a command, it runs here
