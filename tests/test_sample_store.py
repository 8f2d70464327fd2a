"""Resumable sample storage: interrupted multi-process runs end with every index exactly once."""
import json

import numpy as np
import pytest

from maskgil_jax.evaluation.image_sets import NpzImages
from maskgil_jax.evaluation.sample_store import SampleStore, SampleStoreError

SHAPE = (8, 8, 3)
SETTINGS = {"model": "tiny", "cfg": 3.0, "steps": 8}


def image_of(i):
  """A deterministic image per global index, as a sampler that folds the index into its key."""
  return np.full(SHAPE, i % 256, np.uint8)


def label_of(i):
  return i % 5


def tokens_of(i):
  return (np.arange(4) + i).astype(np.int32).reshape(2, 2)


def generate(store, batch, limit=None):
  """What the sampling command does: write this process's pending indices batch by batch."""
  todo = store.pending()[:limit]
  for start in range(0, len(todo), batch):
    idx = todo[start:start + batch]
    store.write(idx, np.stack([image_of(i) for i in idx]), [label_of(i) for i in idx],
                {"tokens": np.stack([tokens_of(i) for i in idx])})


def open_store(tmp_path, p=0, n=1, num=23, settings=SETTINGS, image_shape=SHAPE):
  return SampleStore(tmp_path / "samples", num_samples=num, image_shape=image_shape,
                     settings=settings, process_index=p, process_count=n,
                     arrays={"tokens": ((2, 2), "int32")})


def test_processes_own_disjoint_ranges_that_cover_everything(tmp_path):
  ranges = [open_store(tmp_path, p, 3).owned_range for p in range(3)]
  assert ranges == [(0, 7), (7, 15), (15, 23)]
  assert [len(open_store(tmp_path, p, 3).pending()) for p in range(3)] == [7, 8, 8]


def test_interrupted_run_resumes_without_duplicates_or_gaps(tmp_path):
  # first run: 3 processes; process 1 dies after 3 samples, process 2 before writing anything
  generate(open_store(tmp_path, 0, 3), batch=4)
  generate(open_store(tmp_path, 1, 3), batch=2, limit=3)
  (tmp_path / "samples" / ".shard_00000012_00000013_p002.npz.tmp").write_bytes(b"half")
  assert len(open_store(tmp_path, 0, 3).missing()) == 23 - 7 - 3

  # restart on 2 processes: each gets exactly the missing indices of its new range
  stores = [open_store(tmp_path, p, 2) for p in range(2)]
  pending = [s.pending() for s in stores]
  np.testing.assert_array_equal(np.concatenate(pending), np.arange(10, 23))
  for s in stores:
    generate(s, batch=5)
  assert open_store(tmp_path).missing().size == 0

  out = tmp_path / "samples_23x8x8x3.npz"
  json_path = open_store(tmp_path).finalize(out)
  with np.load(out) as f:
    assert sorted(f.files) == ["arr_0", "labels", "settings", "tokens"]
    np.testing.assert_array_equal(f["arr_0"], np.stack([image_of(i) for i in range(23)]))
    np.testing.assert_array_equal(f["labels"], [label_of(i) for i in range(23)])
    np.testing.assert_array_equal(f["tokens"], np.stack([tokens_of(i) for i in range(23)]))
    assert json.loads(str(f["settings"])) == SETTINGS
  assert NpzImages(out).num_images == 23  # streams as an ADM batch
  record = json.loads(json_path.read_text())
  assert record["settings"] == SETTINGS and record["num_samples"] == 23
  assert record["label_counts"] == [5, 5, 5, 4, 4]
  assert record["arrays"] == {"tokens": {"shape": [2, 2], "dtype": "int32"}}
  # the shards (and the dead process's half write) are gone: the merged file holds them
  assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["merged.json",
                                                                      "settings.json"]

  # reopened with the same settings the set is complete and finalizing again changes nothing;
  # other settings are still refused
  again = open_store(tmp_path, 1, 2)
  assert again.pending().size == 0 and again.missing().size == 0
  before = out.read_bytes()
  assert again.finalize(out) == json_path and out.read_bytes() == before
  with pytest.raises(SampleStoreError, match="merged into"):
    again.finalize(tmp_path / "elsewhere.npz")
  with pytest.raises(SampleStoreError, match=r"settings\.cfg"):
    open_store(tmp_path, settings=dict(SETTINGS, cfg=2.0))
  out.unlink()
  with pytest.raises(SampleStoreError, match="deleted since"):
    open_store(tmp_path).finalize(out)


def test_a_set_without_images_keeps_its_extra_arrays(tmp_path):
  store = open_store(tmp_path, num=3, image_shape=None)
  with pytest.raises(SampleStoreError, match="stores no images"):
    store.write([0], np.stack([image_of(0)]), [0], {"tokens": tokens_of(0)[None]})
  store.write([0, 1, 2], None, [4, 5, 6], {"tokens": np.stack([tokens_of(i) for i in range(3)])})
  store.finalize(tmp_path / "t.npz")
  with np.load(tmp_path / "t.npz") as f:
    assert sorted(f.files) == ["labels", "settings", "tokens"]
    np.testing.assert_array_equal(f["tokens"][2], tokens_of(2))


def test_finalize_refuses_an_incomplete_set(tmp_path):
  generate(open_store(tmp_path), batch=8, limit=20)
  out = tmp_path / "out.npz"
  with pytest.raises(SampleStoreError, match=r"3 of 23 samples are not generated.*\[20, 21, 22\]"):
    open_store(tmp_path).finalize(out)
  assert not out.exists()


def test_other_settings_are_refused(tmp_path):
  # settings are fixed by the first stored sample: an open that wrote nothing binds nothing
  open_store(tmp_path, settings=dict(SETTINGS, cfg=9.0))
  generate(open_store(tmp_path), batch=4, limit=4)
  with pytest.raises(SampleStoreError, match=r"settings\.cfg"):
    open_store(tmp_path, settings=dict(SETTINGS, cfg=2.0))
  with pytest.raises(SampleStoreError, match="num_samples"):
    open_store(tmp_path, num=24)
  with pytest.raises(SampleStoreError, match="image_shape"):
    open_store(tmp_path, image_shape=None)
  (tmp_path / "samples" / "settings.json").unlink()
  with pytest.raises(SampleStoreError, match="holds samples but no settings.json"):
    open_store(tmp_path)


def test_bad_writes_are_refused_and_leave_nothing(tmp_path):
  store = open_store(tmp_path, 0, 2)  # owns [0, 11)
  good = np.stack([image_of(i) for i in range(3)])
  tokens = np.stack([tokens_of(i) for i in range(3)])
  with pytest.raises(SampleStoreError, match="not pending"):
    store.write([10, 11, 12], good, [0, 1, 2], {"tokens": tokens})  # 11, 12 are process 1's
  with pytest.raises(SampleStoreError, match="uint8"):
    store.write([0, 1, 2], good.astype(np.float32), [0, 1, 2], {"tokens": tokens})
  with pytest.raises(SampleStoreError, match="uint8"):
    store.write([0, 1, 2], good[:, :4], [0, 1, 2], {"tokens": tokens})
  with pytest.raises(SampleStoreError, match="labels"):
    store.write([0, 1, 2], good, [0, 1], {"tokens": tokens})
  with pytest.raises(SampleStoreError, match="extra arrays must be"):
    store.write([0, 1, 2], good, [0, 1, 2])
  with pytest.raises(SampleStoreError, match=r"tokens must be int32 \[3, 2, 2\]"):
    store.write([0, 1, 2], good, [0, 1, 2], {"tokens": tokens.astype(np.int64)})
  assert not (tmp_path / "samples").exists()  # not even the settings, nor the folder
  store.write([0, 1, 2], good, [0, 1, 2], {"tokens": tokens})
  with pytest.raises(SampleStoreError, match="not pending"):
    store.write([2, 3, 4], good, [0, 1, 2], {"tokens": tokens})  # 2 is stored already
  assert len(list((tmp_path / "samples").glob("shard_*"))) == 1
  with pytest.raises(SampleStoreError, match="'labels'"):
    SampleStore(tmp_path / "x", num_samples=1, image_shape=None, settings={},
                arrays={"labels": ((), "int64")})


def test_corrupt_shard_is_named(tmp_path):
  generate(open_store(tmp_path), batch=23)
  shard = next((tmp_path / "samples").glob("shard_*"))
  shard.write_bytes(b"garbage")
  with pytest.raises(SampleStoreError, match=shard.name):
    open_store(tmp_path)
