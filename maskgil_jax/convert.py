"""`python -m maskgil_jax.convert --kind K --src FILE --config CONFIG --out DIR`: weights in.

  python -m maskgil_jax.convert --kind llamagen-c2i --src c2i_B_256.pt \
      --config configs/llamagen.py:B --out ckpt/llamagen_b
  python -m maskgil_jax.convert --kind vq16 --src vq_ds16_c2i.pt --config configs/vq16.py \
      --out ckpt/vq16
  python -m maskgil_jax.convert --kind maskgil-reference --src MaskGIL/ckpt/last.pth \
      --config configs/tiny.py:maskgil_reference --out ckpt/maskgil_ref

Kinds: `vq16` (LlamaGen's VQModel and relatives, `config.tokenizer`), `taming-vqgan` and
`chameleon-vqgan` (taming's VQGAN: MaskGIT-pytorch's and Chameleon's Lightning checkpoints,
tokenizer kind 'taming'), `open-magvit2` (kind 'magvit2'; Lightning `loss.*` keys are
dropped, everything else is checked; its EMA copy `model_ema.*` is what is converted, as
Open-MAGVIT2's own scripts use it, unless `--no-ema`), `llamagen-c2i` (LlamaGen's
class-conditional GPT, `config.model.layout='llamagen'`), `llamagen-t2i` (its text-to-image GPT,
layout 'llamagen' with `config.model.condition='caption'`, e.g. configs/llamagen_t2i_xl.py),
`maskgil-reference` (the public MaskGIL
GPT, layout 'maskgil_reference') and `native` (a file `maskgil_jax.export --layout native`
wrote, of any of our models). `--src` is a `.pt`/`.pth`/`.ckpt` (read with
torch.load(weights_only=True): nothing but tensors and plain containers is unpickled; a
Lightning checkpoint that also pickles hyper-parameters, callbacks or optimizer state is read
with those replaced by inert placeholders, and only the tensors under its "state_dict" are
kept, see interop/torch_io.py) or a `.safetensors` file; the state dict may be bare (FSDP/DDP
prefixes are stripped) or under "model", "model_state_dict" or "state_dict"; `--entry ema`
picks another entry. Every key and shape is checked against the
config first, and a checkpoint of another kind is named as such.

The output is an orbax checkpoint in the trainer's layout (`OUT/checkpoints/0/`) with the
config: `maskgil_jax.train` starts from it (`--config.ckpt.init_from=OUT`), `maskgil_jax.sample`
and `maskgil_jax.export` restore it, and a tokenizer goes in `config.tokenizer.ckpt`. It is
written beside `--out` and renamed into place when complete; an existing `--out` is kept unless
`--overwrite`.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil

from maskgil_jax import checkpoints, cli, configlib, loading
from maskgil_jax.configlib.tokenizer import RELEASES
from maskgil_jax.interop import gpt_names, names, tokenizer_names, torch_io
from maskgil_jax.interop.torch_io import CheckpointError

# kind -> the reference layout of config.model it needs (None: a tokenizer, or native)
KINDS = {"vq16": None, "llamagen-c2i": "llamagen", "llamagen-t2i": "llamagen",
         "maskgil-reference": "maskgil_reference", "native": None, "taming-vqgan": None,
         "chameleon-vqgan": None, "open-magvit2": None}
# kind -> the config.model.condition it needs
_CONDITION = {"llamagen-c2i": "class", "llamagen-t2i": "caption", "maskgil-reference": "class"}
# tokenizer kind -> (key family, the config.tokenizer.kind it needs)
TOKENIZER_KINDS = {r.convert: (r.keys, r.kind) for r in RELEASES}
# Fields that change what a network computes without changing any key or shape: a native
# file's embedded config must agree with --config on them.
_UNSHAPED_FIELDS = {
    "model": ("layout", "rope", "norm_placement", "norm_eps", "rope_base", "cls_token_num",
              "grid_size", "n_head"),
    "tokenizer": ("kind", "l2_norm"),
}


def key_family(state_dict) -> str | None:
  """Which kind of model a state dict's keys belong to (None when none is recognised)."""
  family = tokenizer_names.family_of(state_dict)
  if family is not None:  # taming's file is the taming-vqgan or chameleon-vqgan kind alike
    return next(r.convert for r in RELEASES if r.keys == family)
  if any(k.startswith(("encoder.", "decoder.")) for k in state_dict):
    return "vq16"
  if "tok_emb.weight" in state_dict:
    return "maskgil-reference"
  if "cls_embedding.cap_proj.fc1.weight" in state_dict:
    return "llamagen-t2i"  # LlamaGen's caption embedder
  if "tok_embeddings.weight" in state_dict:
    return "llamagen-c2i"  # our native GPTs share LlamaGen's embedding names
  return None


def _check_family(kind: str, state_dict, source: str) -> None:
  found = key_family(state_dict)
  if kind in TOKENIZER_KINDS and found in TOKENIZER_KINDS:
    found = kind if TOKENIZER_KINDS[found][0] == TOKENIZER_KINDS[kind][0] else found
  if found != kind:
    what = f"a {found} checkpoint" if found else "no checkpoint kind this converter knows"
    raise CheckpointError(f"{source}: holds {what}, not {kind} (first keys: "
                          f"{', '.join(sorted(state_dict)[:4]) or 'none'})")


def _native_target(metadata: dict, config, source: str) -> str:
  """'transformer' or 'tokenizer' for a native export, after checking its embedded config."""
  if metadata.get(torch_io.META_LAYOUT) != "native":
    raise CheckpointError(f"{source}: is not a native export (its metadata has no "
                          f"{torch_io.META_LAYOUT}=native); pass the reference --kind instead")
  target = metadata.get(torch_io.META_KIND)
  section = {"transformer": "model", "tokenizer": "tokenizer"}.get(target)
  if section is None:
    raise CheckpointError(f"{source}: unknown {torch_io.META_KIND} {target!r}")
  if torch_io.META_CONFIG not in metadata:
    raise CheckpointError(f"{source}: its metadata lacks the exported config "
                          f"({torch_io.META_CONFIG})")
  embedded = json.loads(metadata[torch_io.META_CONFIG])[section]
  for field in _UNSHAPED_FIELDS[section]:
    if field in embedded and embedded[field] != config[section][field]:
      raise configlib.ConfigError(
          f"config.{section}.{field}: {config[section][field]!r}, but {source} was exported "
          f"from a model with {embedded[field]!r}")
  return target


def import_weights(kind: str, state_dict, metadata: dict, config, source: str,
                   ema: bool | None = None):
  """(module, config to save with it) holding the weights of a state dict of `kind`."""
  if kind not in KINDS:
    raise cli.UsageError(f"--kind {kind!r}; one of {list(KINDS)}")
  if kind == "native":
    target = _native_target(metadata, config, source)
  else:
    _check_family(kind, state_dict, source)
    target = "tokenizer" if kind in TOKENIZER_KINDS else "transformer"
  if target == "tokenizer":
    needs = TOKENIZER_KINDS.get(kind, (None, None))[1]
    if needs is not None and config.tokenizer.kind != needs:
      raise configlib.ConfigError(f"config.tokenizer.kind: {config.tokenizer.kind!r}, but a "
                                  f"{kind} checkpoint needs {needs!r}")
    abstract = loading.abstract_tokenizer(config.tokenizer)
    module = tokenizer_names.import_tokenizer_state_dict(abstract, state_dict, source=source,
                                                         ema=ema)
    saved = config.copy_and_resolve_references()
    saved.task = "tokenizer"  # so `config.tokenizer.ckpt=OUT` restores it as a tokenizer
    return module, saved
  if KINDS[kind] is not None:
    gpt_names.check_reference_architecture(config.model, KINDS[kind])
    condition = config.model.condition
    if condition != _CONDITION[kind]:
      raise configlib.ConfigError(f"config.model.condition: {condition!r}, but a {kind} "
                                  f"checkpoint is conditioned on {_CONDITION[kind]!r}")
  module = loading.import_gpt(loading.abstract_generator(config.model), state_dict, config.model,
                              source)
  return module, config


def write_checkpoint(out: pathlib.Path, module, config, overwrite: bool = False) -> None:
  """`checkpoints.save_params` into a sibling of `out`, renamed to `out` once complete."""
  tmp = out.with_name(f".{out.name}.converting")
  old = out.with_name(f".{out.name}.replaced")
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    checkpoints.save_params(tmp, module, config)
    if out.exists():
      if not overwrite:
        raise cli.OutputExistsError(f"--out {out} appeared while converting; not replacing it")
      out.rename(old)
      tmp.rename(out)
      shutil.rmtree(old)
    else:
      tmp.rename(out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def convert(kind: str, src, config, out, *, entry: str | None = None,
            overwrite: bool = False, ema: bool | None = None) -> dict:
  """Convert `src` into an orbax checkpoint at `out`; returns a summary."""
  out = cli.check_new_output(out, overwrite=overwrite, what="folder")
  config = configlib.finalize(config)
  state_dict, metadata = torch_io.load_weights(src, entry)
  module, saved_config = import_weights(kind, state_dict, metadata, config, str(src), ema)
  write_checkpoint(out, module, saved_config, overwrite)
  return dict(tensors=len(state_dict),
              parameters=sum(v.size for v in names.named_arrays(module).values()))


def parser() -> cli.Parser:
  p = cli.Parser("convert", __doc__.split("\n\n")[0], config="required")
  p.add_argument("--kind", required=True, choices=list(KINDS), help="what --src holds")
  p.add_argument("--src", required=True, help=".pt / .pth / .safetensors file to convert")
  p.add_argument("--out", required=True, help="folder to write the orbax checkpoint to")
  p.add_argument("--entry", help="checkpoint entry holding the weights, e.g. ema (default: the "
                 "bare dict, model, model_state_dict or state_dict)")
  p.add_argument("--ema", action=argparse.BooleanOptionalAction, help="tokenizers: the EMA "
                 "copy of the weights (Open-MAGVIT2's model_ema.*), the default when the file "
                 "has one; --no-ema takes the raw weights")
  p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
  return p


def _main(argv) -> int:
  args = parser().parse(argv)
  config = cli.load_config(args)
  info = convert(args.kind, args.src, config, args.out, entry=args.entry,
                 overwrite=args.overwrite, ema=args.ema)
  cli.summary(f"converted {args.kind} {args.src} ({info['tensors']} tensors, "
              f"{info['parameters']:,} parameters) to {args.out}")
  return 0


main = cli.entry(_main, __name__)  # last: run as a command, it runs here
