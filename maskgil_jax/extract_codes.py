"""`python -m maskgil_jax.extract_codes --config CONFIG --out DIR`: pre-tokenize a dataset once.

Encodes every image of `config.data` (source, split, size, fit) with the tokenizer
`config.tokenizer` (weights: `config.tokenizer.ckpt`) into ArrayRecord code shards that
`data.name='codes'` trains on (format: `maskgil_jax/data/code_shards.py`). Every view of an
image is stored: its mirror with `data.random_flip`, LlamaGen's ten crops with `data.ten_crop`.

  --config       experiment file; `--config.data.split=...` etc. override it
  --out          the code folder (created; an existing one is resumed)
  --batch-size   images per encoder call on this host (views x images are spread over its
                 local devices; default 64)
  --shard-size   images per shard (default 4096): the unit of resumption

Run the same command on every host of a job: host i of n encodes shards i, i+n, ... on its own
devices. A shard appears only when complete and existing shards are skipped, so an interrupted
run is resumed by running it again, with no duplicates; settings that differ from the folder's
`codes.json` are refused. Unreadable images are skipped, reported and counted.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from tqdm import tqdm

from maskgil_jax import cli
from maskgil_jax.configlib import ConfigError
from maskgil_jax.configlib.base import mesh_config
from maskgil_jax.data import code_shards, preprocess
from maskgil_jax.data.pipelines import check_data
from maskgil_jax.data.unreadable import Unreadable
from maskgil_jax.data.sources import open_image_source
from maskgil_jax.loading import load_tokenizer
from maskgil_jax.models.vq import VQModel, encode
from maskgil_jax.parallel import mesh as mesh_lib
from maskgil_jax.parallel.pump import padded

logger = logging.getLogger(__name__)

class ImageViews(grain.transforms.Map):
  """Source index -> (index, label, every view uint8 [V, S, S, 3]), or (index, Unreadable)."""

  def __init__(self, source, data):
    self.source, self.data = source, data
    self.base_size = preprocess.base_size(data.image_size, data.ten_crop, data.crop_range)

  def map(self, index):
    record = self.source[int(index)]
    try:
      pixels, label = self.source.load(record)
      base = preprocess.fit(pixels, self.base_size, self.data.fit)
    except preprocess.UnreadableImage as e:
      return int(index), Unreadable(self.source.describe(record), str(e))
    views = preprocess.all_views(base, self.data.image_size, self.data.ten_crop,
                                 self.data.random_flip)
    return int(index), label, views


@dataclasses.dataclass
class _Encoder:
  """Encodes batches of views on this host's devices, one call in flight ahead of the host."""
  model: VQModel
  rows: int  # views per call, a multiple of the local device count (padded)

  def __post_init__(self):
    mesh = mesh_lib.make_mesh(mesh_config(), jax.local_devices())
    self.sharding = mesh_lib.batch_sharding(mesh)
    self.model = jax.device_put(self.model, NamedSharding(mesh, PartitionSpec()))

  def __call__(self, views: np.ndarray):
    """Dispatches `views` (uint8 [n <= rows, S, S, 3]); returns a function giving the codes."""
    n = len(views)
    codes = encode(self.model, jax.device_put(
        preprocess.to_model_range(padded(views, self.rows)), self.sharding))
    return lambda: np.asarray(codes)[:n]


def chunks_of(num_images: int, shard_size: int, process_index: int,
              process_count: int) -> list[tuple[int, int]]:
  """This process's [start, stop) source ranges: shard i of all goes to process i % count."""
  ranges = [(s, min(s + shard_size, num_images)) for s in range(0, num_images, shard_size)]
  return ranges[process_index::process_count]


def extract_codes(config, out, model: VQModel | None = None, *, batch_size: int = 64,
                  shard_size: int = 4096, process_index: int | None = None,
                  process_count: int | None = None, progress: bool = True) -> dict:
  """Writes this process's missing shards of `config.data` to `out`; returns a summary."""
  data, tok = config.data, config.tokenizer
  check_data(data)
  if data.name == "codes":
    raise ConfigError("config.data.name: 'codes' is already tokenized; name the image source")
  if batch_size <= 0 or shard_size <= 0:
    raise ConfigError(f"--batch-size ({batch_size}) and --shard-size ({shard_size}) must be "
                      "positive")
  if model is None:
    if not tok.ckpt:
      raise ConfigError("config.tokenizer.ckpt: the tokenizer weights to encode with")
    model = load_tokenizer(tok.ckpt, tok)
  factor = model.downsample_factor
  if data.image_size % factor:
    raise ConfigError(f"config.data.image_size: {data.image_size} is not a multiple of the "
                      f"tokenizer's downsampling factor {factor}")
  if process_index is None or process_count is None:
    process_index, process_count = jax.process_index(), jax.process_count()

  source = open_image_source(data)
  views = preprocess.num_views(data.ten_crop, data.random_flip)
  grid = data.image_size // factor
  meta = code_shards.CodesMeta(
      source=f"{data.name}:{data.path}" if data.name == "folder" else f"{data.name}/{data.split}",
      image_size=data.image_size, grid=(grid, grid), views=views,
      codebook_size=tok.codebook_size, ten_crop=data.ten_crop, random_flip=data.random_flip,
      crop_range=data.crop_range if data.ten_crop else 1.0, fit=data.fit,
      tokenizer=str(tok.ckpt or "given model"), num_images=len(source))
  out = pathlib.Path(out)
  code_shards.write_meta(out, meta)

  mine = chunks_of(len(source), shard_size, process_index, process_count)
  todo = [c for c in mine if not (out / code_shards.shard_name(*c)).exists()]
  indices = np.concatenate([np.arange(*c) for c in todo]) if todo else np.zeros(0, np.int64)
  stream = grain.MapDataset.source(indices).map(ImageViews(source, data)).to_iter_dataset(
      grain.ReadOptions(num_threads=data.read_threads,
                        prefetch_buffer_size=max(2 * batch_size, data.read_threads)))
  devices = jax.local_device_count()
  encoder = _Encoder(model, rows=-(-batch_size * views // devices) * devices)

  unreadable, written = 0, 0
  chunk_pos = 0
  records: list[bytes] = []
  batch: list[tuple[int, int, np.ndarray]] = []
  pending = None  # (items, codes getter) of the call in flight

  def collect():
    nonlocal pending
    if pending is not None:
      items, get = pending
      codes = get().reshape(len(items), views, grid, grid)
      records.extend(code_shards.encode_record(i, label, c, meta)
                     for (i, label, _), c in zip(items, codes))
      pending = None

  def dispatch():
    nonlocal batch, pending
    if batch:
      call = encoder(np.concatenate([v for _, _, v in batch]))
      collect()
      pending, batch = (batch, call), []

  bar = tqdm(stream, total=len(indices), disable=not progress, desc="extract codes",
             unit="img")
  for element in bar:
    index = element[0]
    if isinstance(element[1], Unreadable):
      unreadable += 1
      logger.warning("skipped unreadable image %s (%s)", element[1].what, element[1].reason)
    else:
      batch.append(element)
      if len(batch) == batch_size:
        dispatch()
    start, stop = todo[chunk_pos]
    if index == stop - 1:  # the chunk is read: encode its rest and write it
      dispatch()
      collect()
      code_shards.write_shard(out, start, stop, records)
      written, records, chunk_pos = written + 1, [], chunk_pos + 1
  bar.close()
  return dict(out=str(out), shards_written=written, shards_present=len(mine) - len(todo),
              images=int(len(indices)) - unreadable, unreadable=unreadable, views=views,
              grid=grid, process=f"{process_index}/{process_count}")


def _main(argv) -> int:
  p = cli.Parser("extract_codes", __doc__.split("\n\n")[0], config="required")
  p.add_shard_flags("code", 64, "images per encoder call on this host (default 64)")
  a = p.parse(argv)
  sizes = cli.shard_sizes(a)
  config = cli.load_config(a)
  mesh_lib.initialize_for(config.mesh)  # before JAX touches a device; each process its share
  s = extract_codes(config, a.out, **sizes)
  print(f"process {s['process']}: encoded {s['images']} images ({s['views']} views of "
        f"{s['grid']}x{s['grid']} codes) into {s['shards_written']} new shards in {s['out']}; "
        f"{s['shards_present']} shards were already there; {s['unreadable']} unreadable images "
        "skipped", flush=True)
  return 0


main = cli.entry(_main, __name__)  # last: run as a command, it runs here
