"""`python -m maskgil_jax.extract_text --config CONFIG --out DIR`: caption features, once.

Encodes every caption of every image of the image-caption source `config.data` with the frozen
T5 of `config.text` (folder `text.encoder`, `text.max_length` slots) and writes shards of the
valid feature rows (format: `maskgil_jax/data/text_features.py`). Training with
`--config.data.text_features=DIR` then reads them instead of running T5 in every step, and
sees exactly the features encoding on the fly would give (same captions, same left padding).

  --config       experiment file; `--config.data.*`, `--config.text.*` override it
  --out          the feature folder (created; an existing one is resumed)
  --batch-size   captions per encoder call (default 256)
  --shard-size   source images per shard (default 4096): the unit of resumption

Run the same command on every host: host i of n writes shards i, i+n, ...; a shard appears
only when complete and existing ones are skipped, so rerunning resumes an interrupted run.
A folder made from another source or text setting is refused. Images whose captions are all
empty are not in the source at all (counted when it is opened), except in a TFDS set, which
is not scanned when it opens: there they get no features and are counted here.
"""
from __future__ import annotations

import dataclasses
import pathlib

import jax
from tqdm import tqdm

from maskgil_jax import cli, loading
from maskgil_jax.configlib import ConfigError
from maskgil_jax.data import text_features
from maskgil_jax.data.captions import CAPTION_SOURCES, open_caption_source
from maskgil_jax.parallel import mesh as mesh_lib
from maskgil_jax.text import encoder as text_encoder


def extract_text(config, out, encoder: text_encoder.TextEncoder | None = None, *,
                 batch_size: int = 256, shard_size: int = 4096, process_index: int | None = None,
                 process_count: int | None = None, progress: bool = True) -> dict:
  """Writes this process's missing shards of caption features to `out`; returns a summary."""
  data, text = config.data, config.text
  source = open_caption_source(data)
  if source is None:
    raise ConfigError(f"config.data.name: {data.name!r} has no captions; one of "
                      f"{CAPTION_SOURCES} or a TFDS set with data.caption_key")
  if batch_size < 1 or shard_size < 1:
    raise ConfigError(f"--batch-size ({batch_size}) and --shard-size ({shard_size}) must be "
                      "positive")
  if encoder is None:
    if not text.encoder:
      raise ConfigError("config.text.encoder: the T5 folder to encode captions with")
    encoder = loading.load_text_encoder(text.encoder, text)
  if process_index is None or process_count is None:
    process_index, process_count = jax.process_index(), jax.process_count()
  meta = text_features.FeaturesMeta(
      width=encoder.width, max_length=text.max_length, num_records=len(source),
      shard_size=shard_size, source=text_features.source_id(data))
  out_path = pathlib.Path(out)
  if (out_path / text_features.META_FILE).is_file():
    old = text_features.read_meta(out_path)
    if old != meta:
      diff = {k: (v, getattr(meta, k)) for k, v in dataclasses.asdict(old).items()
              if v != getattr(meta, k)}
      raise ConfigError(f"--out {out}: holds features made with other settings "
                        f"(folder, now): {diff}; choose another folder")
  else:
    text_features.write_meta(out_path, meta)

  mine = meta.shards()[process_index::process_count]
  todo = [s for s in mine if not text_features.shard_done(out_path, *s)]
  captions = empty = 0
  for start, stop in tqdm(todo, disable=not progress, desc="extract text", unit="shard"):
    items = []
    for r in range(start, stop):
      caps = source.captions_of(source[r])
      empty += not caps  # a TFDS source is not scanned when it opens: its empty ones show here
      items.extend((r, c, caption) for c, caption in enumerate(caps))
    entries = []
    for i in range(0, len(items), batch_size):
      chunk = items[i:i + batch_size]
      features, mask = text_encoder.encode_prompts(encoder, [x[2] for x in chunk])
      entries.extend((r, c, f[m]) for (r, c, _), f, m in zip(chunk, features, mask))
    text_features.write_shard(out_path, start, stop, entries)
    captions += len(items)
  return dict(out=str(out_path), shards_written=len(todo), shards_present=len(mine) - len(todo),
              captions=captions, skipped_empty=getattr(source, "skipped_empty", 0) + empty,
              process=f"{process_index}/{process_count}")


def parser() -> cli.Parser:
  p = cli.Parser("extract_text", __doc__.split("\n\n")[0], config="required")
  p.add_shard_flags("feature", 256, "captions per encoder call")
  return p


def _main(argv) -> int:
  a = parser().parse(argv)
  sizes = cli.shard_sizes(a)
  config = cli.load_config(a)
  mesh_lib.initialize_for(config.mesh)  # before JAX touches a device; each process its share
  s = extract_text(config, a.out, **sizes)
  cli.summary("process %s: encoded %d captions into %d new shards in %s; %d shards were already "
              "there; %d images without captions skipped", s["process"], s["captions"],
              s["shards_written"], s["out"], s["shards_present"], s["skipped_empty"])
  return 0


main = cli.entry(_main, __name__)  # last: run as a command, it runs here
