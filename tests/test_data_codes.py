"""Pre-tokenized code shards: format, the 'codes' pipeline, and equality with on-the-fly views."""
import dataclasses

import numpy as np
import pytest
from PIL import Image

from maskgil_jax.configlib import base_config
from maskgil_jax.data import code_shards, preprocess
from maskgil_jax.data.pipelines import make_pipeline
from maskgil_jax.data.unreadable import unreadable_images
from maskgil_jax.data.sources import DataError, FolderSource

SOLO = dict(process_index=0, process_count=1)
META = code_shards.CodesMeta(source="test", image_size=16, grid=(8, 8), views=10,
                             codebook_size=256, ten_crop=True, random_flip=True, crop_range=1.1,
                             fit="center_crop", tokenizer="fake", num_images=12)


def fake_tokenize(views_uint8):
  """A stand-in tokenizer: every other pixel of the red channel (values < 256 codes)."""
  return views_uint8[..., ::2, ::2, 0].astype(np.int32)


def write_images(root, n=12):
  rng = np.random.default_rng(0)
  for i in range(n):
    (root / f"class{i % 3}").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (20 + i, 24, 3), dtype=np.uint8)).save(
        root / f"class{i % 3}" / f"{i}.png")
  return root


def extract(folder_source, out, meta, split_at):
  """What extract_codes does, with the fake tokenizer: every view of every image, two shards."""
  code_shards.write_meta(out, meta)
  records = []
  for i in range(len(folder_source)):
    pixels, label = folder_source.load(i)
    base = preprocess.fit(pixels, preprocess.base_size(16, True, 1.1), "center_crop")
    views = preprocess.all_views(base, 16, ten_crop=True, random_flip=True)
    records.append(code_shards.encode_record(i, label, fake_tokenize(views), meta))
  code_shards.write_shard(out, 0, split_at, records[:split_at])
  code_shards.write_shard(out, split_at, len(records), records[split_at:])


def data_config(**overrides):
  d = base_config().data
  d.update(dict(image_size=16, read_threads=0, prefetch=0, ten_crop=True))
  d.update(overrides)
  return d


def test_training_on_codes_sees_the_same_views_as_on_the_fly(tmp_path):
  images = write_images(tmp_path / "images")
  extract(FolderSource(images), tmp_path / "codes", META, split_at=5)
  on_the_fly = make_pipeline(data_config(name="folder", path=str(images)), 4, seed=5, **SOLO)
  from_codes = make_pipeline(data_config(name="codes", path=str(tmp_path / "codes")), 4, seed=5,
                             **SOLO)
  for _ in range(9):  # three epochs: views and order are redrawn every epoch
    a, b = next(on_the_fly), next(from_codes)
    pixels = np.rint((a["image"] + 1) * 127.5).astype(np.uint8)
    np.testing.assert_array_equal(fake_tokenize(pixels), b["codes"])
    np.testing.assert_array_equal(a["label"], b["label"])
    assert b["codes"].dtype == np.int32 and b["codes"].shape == (4, 8, 8)


def test_record_round_trip_and_dtype():
  codes = np.random.default_rng(0).integers(0, 256, (10, 8, 8))
  data = code_shards.encode_record(7, 3, codes, META)
  assert len(data) == META.record_bytes == 16 + 10 * 64 * 2  # uint16 codes
  index, label, back = code_shards.decode_record(data, META)
  assert (index, label) == (7, 3)
  np.testing.assert_array_equal(back, codes)
  big = dataclasses.replace(META, codebook_size=2**18)
  assert big.dtype == np.dtype("<i4")
  np.testing.assert_array_equal(
      code_shards.decode_record(code_shards.encode_record(0, 0, codes * 1000, big), big)[2],
      codes * 1000)
  with pytest.raises(ValueError, match="expected"):
    code_shards.encode_record(0, 0, codes[:2], META)


def test_corrupt_records_are_replaced_and_unfinished_shards_ignored(tmp_path):
  meta = dataclasses.replace(META, views=1, num_images=3)
  code_shards.write_meta(tmp_path, meta)
  good = [code_shards.encode_record(i, i, np.full((1, 8, 8), i), meta) for i in range(3)]
  code_shards.write_shard(tmp_path, 0, 3, [good[0], b"short", good[2]])
  (tmp_path / (code_shards.shard_name(3, 6) + ".tmp")).write_bytes(b"interrupted")
  assert [p.name for p in code_shards.list_shards(tmp_path)] == [code_shards.shard_name(0, 3)]
  it = make_pipeline(data_config(name="codes", path=str(tmp_path)), 1, 0, shuffle=False,
                     num_epochs=1, **SOLO)
  assert [int(b["label"][0]) for b in it] == [0, 2, 2]  # the short record takes the next one
  assert unreadable_images(it) == 1


def test_code_folder_errors_name_the_problem(tmp_path):
  with pytest.raises(DataError, match="codes.json"):
    make_pipeline(data_config(name="codes", path=str(tmp_path)), 1, 0, **SOLO)
  code_shards.write_meta(tmp_path, META)
  with pytest.raises(DataError, match="no complete code shards"):
    make_pipeline(data_config(name="codes", path=str(tmp_path)), 1, 0, **SOLO)
  code_shards.write_shard(tmp_path, 0, 1, [code_shards.encode_record(
      0, 0, np.zeros((10, 8, 8)), META)])
  with pytest.raises(DataError, match="extracted at 16px"):
    make_pipeline(data_config(name="codes", path=str(tmp_path), image_size=32), 1, 0, **SOLO)
  with pytest.raises(DataError, match="other settings"):
    code_shards.write_meta(tmp_path, dataclasses.replace(META, views=2))
  code_shards.write_meta(tmp_path, META)  # the same settings: a resumed run is accepted
  (tmp_path / code_shards.META_FILE).write_text("{not json")
  with pytest.raises(DataError, match="unreadable"):
    code_shards.read_meta(tmp_path)
