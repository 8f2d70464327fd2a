"""Code extraction: same batches as on-the-fly tokenization, resume without duplicates, split."""
import numpy as np
import pytest
from PIL import Image

from maskgil_jax import extract_codes as ec
from maskgil_jax.configlib import base_config
from maskgil_jax.data import code_shards
from maskgil_jax.data.pipelines import make_pipeline
from maskgil_jax.data.sources import DataError
from maskgil_jax.loading import load_tokenizer
from maskgil_jax.models.vq import encode

SOLO = dict(process_index=0, process_count=1)
NUM_IMAGES = 10


@pytest.fixture(scope="module")
def weights(fixtures_dir):
  return fixtures_dir / "llamagen_vq_tiny.safetensors"  # LlamaGen VQ, 32px -> 16x16 codes


@pytest.fixture(scope="module")
def tokenizer(weights):
  return load_tokenizer(weights, base_config(tokenizer="tiny").tokenizer)


@pytest.fixture
def config(tmp_path):
  rng = np.random.default_rng(0)
  for i in range(NUM_IMAGES):
    folder = tmp_path / "images" / f"class{i % 2}"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (30 + i, 36, 3), dtype=np.uint8)).save(folder / f"{i}.png")
  c = base_config(tokenizer="tiny")
  c.data.update(dict(name="folder", path=str(tmp_path / "images"), image_size=32, read_threads=0,
                     prefetch=0))
  return c


def stored_indices(out):
  meta = code_shards.read_meta(out)
  return [code_shards.decode_record(r, meta)[0] for p in code_shards.list_shards(out)
          for r in _records(p)]


def _records(path):
  import grain
  source = grain.sources.ArrayRecordDataSource([str(path)])
  return [source[i] for i in range(len(source))]


def extract(config, out, tokenizer, **kwargs):
  return ec.extract_codes(config, out, tokenizer, batch_size=2, shard_size=4, progress=False,
                          **{**SOLO, **kwargs})


def test_training_on_extracted_codes_equals_tokenizing_on_the_fly(config, tokenizer, weights,
                                                                  tmp_path):
  config.tokenizer.ckpt = str(weights)  # the command's path: weights named by the config
  summary = extract(config, tmp_path / "codes", None)
  assert (summary["shards_written"], summary["images"], summary["views"]) == (3, NUM_IMAGES, 2)
  assert code_shards.read_meta(tmp_path / "codes").tokenizer == str(weights)
  on_the_fly = make_pipeline(config.data, 4, seed=7, **SOLO)
  codes_cfg = config.data.copy_and_resolve_references()
  codes_cfg.update(dict(name="codes", path=str(tmp_path / "codes")))
  from_codes = make_pipeline(codes_cfg, 4, seed=7, **SOLO)
  for _ in range(6):  # past two epochs: order and flips are redrawn each epoch
    images, codes = next(on_the_fly), next(from_codes)
    np.testing.assert_array_equal(np.asarray(encode(tokenizer, images["image"])), codes["codes"])
    np.testing.assert_array_equal(images["label"], codes["label"])


def test_interrupted_run_resumes_without_duplicates(config, tokenizer, tmp_path, monkeypatch):
  out = tmp_path / "codes"
  real_write = code_shards.write_shard
  calls = []

  def crash_on_second(*args):
    calls.append(args[1])
    if len(calls) == 2:
      raise KeyboardInterrupt  # the job is killed while encoding the second shard
    return real_write(*args)

  monkeypatch.setattr(code_shards, "write_shard", crash_on_second)
  with pytest.raises(KeyboardInterrupt):
    extract(config, out, tokenizer)
  monkeypatch.setattr(code_shards, "write_shard", real_write)
  (out / (code_shards.shard_name(4, 8) + ".tmp")).write_bytes(b"half a shard")
  assert stored_indices(out) == [0, 1, 2, 3]
  summary = extract(config, out, tokenizer)
  assert (summary["shards_present"], summary["shards_written"]) == (1, 2)
  assert stored_indices(out) == list(range(NUM_IMAGES))
  assert extract(config, out, tokenizer)["shards_written"] == 0  # complete: nothing to do
  config.data.random_flip = False
  with pytest.raises(DataError, match="other settings"):
    extract(config, out, tokenizer)


def test_hosts_write_disjoint_shards_that_cover_the_data(config, tokenizer, tmp_path):
  out = tmp_path / "codes"
  first = extract(config, out, tokenizer, process_index=0, process_count=2)
  second = extract(config, out, tokenizer, process_index=1, process_count=2)
  assert (first["shards_written"], second["shards_written"]) == (2, 1)
  assert stored_indices(out) == list(range(NUM_IMAGES))


def test_unreadable_images_are_left_out_and_counted(config, tokenizer, tmp_path):
  bad = tmp_path / "images" / "class0" / "5_broken.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  summary = extract(config, tmp_path / "codes", tokenizer)
  assert (summary["unreadable"], summary["images"]) == (1, NUM_IMAGES)
  assert len(stored_indices(tmp_path / "codes")) == NUM_IMAGES
