"""The image pipelines: batch layout, determinism, resume, per-process split, bad images, TFDS."""
import json
import logging
import pathlib

import numpy as np
import pytest
from PIL import Image

from maskgil_jax.configlib import base_config
from maskgil_jax.data.pipelines import make_pipeline
from maskgil_jax.data.unreadable import unreadable_images
from maskgil_jax.data.sources import DataError

SOLO = dict(process_index=0, process_count=1)


def data_config(**overrides):
  d = base_config().data
  d.update(dict(image_size=32, fit="pad", read_threads=0, prefetch=0))
  d.update(overrides)
  return d


def write_folder(root: pathlib.Path, per_class: int = 6, classes=("ant", "bee", "cow")):
  """Solid-colour images whose red value is a unique id (id = 10 * label + i + 1)."""
  for label, name in enumerate(classes):
    (root / name).mkdir(parents=True)
    for i in range(per_class):
      img = np.zeros((20 + i, 24, 3), np.uint8)
      img[..., 0] = 10 * label + i + 1
      Image.fromarray(img).save(root / name / f"{i}.png")
  return root


def all_ids(classes=3, per_class=6):
  return sorted(10 * label + i + 1 for label in range(classes) for i in range(per_class))


def ids(batch):
  """Image ids back from the red channel of the padded image's centre pixel."""
  return np.rint((batch["image"][:, 16, 16, 0] + 1) * 127.5).astype(int)


def take(it, n):
  return [next(it) for _ in range(n)]


def test_demo_batches_have_the_trainer_layout():
  it = make_pipeline(data_config(prefetch=2), batch_size=8, seed=0, **SOLO)
  b = next(it)
  it.close()
  assert set(b) == {"image", "label"}
  assert b["image"].shape == (8, 32, 32, 3) and b["image"].dtype == np.float32
  assert b["label"].shape == (8,) and b["label"].dtype == np.int32
  assert b["image"].min() == -1.0 and 0.5 < b["image"].max() <= 1.0
  assert 0 <= b["label"].min() and b["label"].max() < 10
  assert np.all(b["image"][:, :2] == -1.0)  # 28px images padded on black to 32


def test_same_seed_same_stream_other_seed_other_stream():
  a = take(make_pipeline(data_config(), batch_size=4, seed=3, **SOLO), 3)
  b = take(make_pipeline(data_config(), batch_size=4, seed=3, **SOLO), 3)
  c = take(make_pipeline(data_config(), batch_size=4, seed=4, **SOLO), 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  assert any(not np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))


def test_resume_from_saved_state_in_a_new_iterator():
  cfg = data_config(prefetch=2, read_threads=4)
  it = make_pipeline(cfg, batch_size=4, seed=1, **SOLO)
  take(it, 5)
  saved = json.loads(json.dumps(it.get_state()))  # what the checkpoint stores
  expected = take(it, 3)
  it.close()
  fresh = make_pipeline(cfg, batch_size=4, seed=1, **SOLO)
  fresh.set_state(saved)
  for want, got in zip(expected, take(fresh, 3)):
    np.testing.assert_array_equal(want["image"], got["image"])
  fresh.close()


def test_epochs_are_reshuffled_and_cover_everything(tmp_path):
  cfg = data_config(name="folder", path=str(write_folder(tmp_path)))
  it = make_pipeline(cfg, batch_size=6, seed=0, **SOLO)
  first = np.concatenate([ids(b) for b in take(it, 3)])
  second = np.concatenate([ids(b) for b in take(it, 3)])
  assert sorted(first) == sorted(second) == all_ids()
  assert not np.array_equal(first, second)


def test_processes_read_their_rows_of_the_same_global_batches(tmp_path):
  """Any number of processes sees one stream: process p's rows of global batch k are rows
  [p * B/n, (p+1) * B/n) of what one process reads, shuffled and repeated alike."""
  cfg = data_config(name="folder", path=str(write_folder(tmp_path)))
  one = np.stack([ids(b) for b in take(make_pipeline(cfg, batch_size=6, seed=0, **SOLO), 5)])
  for n in (2, 3):
    parts = [np.stack([ids(b) for b in take(make_pipeline(
        cfg, batch_size=6, seed=0, process_index=p, process_count=n), 5)]) for p in range(n)]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), one)
  with pytest.raises(DataError, match="batch_size: 7 must be a positive multiple"):
    make_pipeline(cfg, batch_size=7, seed=0, process_index=0, process_count=3)


def test_a_position_saved_by_two_processes_resumes_on_one_and_on_three(tmp_path):
  cfg = data_config(name="folder", path=str(write_folder(tmp_path)), read_threads=2)
  straight = [ids(b) for b in take(make_pipeline(cfg, batch_size=6, seed=2, **SOLO), 7)]
  two = [make_pipeline(cfg, batch_size=6, seed=2, process_index=p, process_count=2)
         for p in range(2)]
  for it in two:
    take(it, 4)
  states = [json.loads(json.dumps(it.get_state())) for it in two]
  assert states[0] == states[1]  # the position is global: the same in every process's file
  resumed = make_pipeline(cfg, batch_size=6, seed=2, **SOLO)
  resumed.set_state(states[0])
  for want, got in zip(straight[4:], take(resumed, 3)):
    np.testing.assert_array_equal(ids(got), want)
  thirds = [make_pipeline(cfg, batch_size=6, seed=2, process_index=p, process_count=3)
            for p in range(3)]
  for it in thirds:
    it.set_state(states[0])
  rows = np.concatenate([np.stack([ids(b) for b in take(it, 3)]) for it in thirds], axis=1)
  np.testing.assert_array_equal(rows, np.stack(straight[4:]))


def test_unreadable_images_are_replaced_by_the_next_readable_counted_and_reported(
    tmp_path, caplog):
  root = write_folder(tmp_path, per_class=3, classes=("a", "b"))
  (root / "a" / "garbage.jpg").write_bytes(b"not an image at all")
  good = (root / "b" / "0.png").read_bytes()
  (root / "b" / "truncated.png").write_bytes(good[: len(good) // 2])
  cfg = data_config(name="folder", path=str(root))
  with caplog.at_level(logging.WARNING, logger="maskgil_jax.data.unreadable"):
    it = make_pipeline(cfg, batch_size=2, seed=0, shuffle=False, num_epochs=1, **SOLO)
    batches = list(it)
  # source order 1 2 3 garbage 11 12 13 truncated: garbage takes the next readable image, the
  # last one (nothing after it) the one before it; every batch keeps its shape
  assert np.concatenate([ids(b) for b in batches]).tolist() == [1, 2, 3, 11, 11, 12, 13, 13]
  assert all(set(b) == {"image", "label"} for b in batches)
  assert unreadable_images(it) == 2
  assert "garbage.jpg" in caplog.text and "truncated.png" in caplog.text


def test_a_stream_of_nothing_but_unreadable_images_is_an_error(tmp_path):
  from maskgil_jax.data.unreadable import TooManyUnreadable
  (tmp_path / "a").mkdir()
  for i in range(3):
    (tmp_path / "a" / f"{i}.png").write_bytes(b"broken")
  it = make_pipeline(data_config(name="folder", path=str(tmp_path)), batch_size=2, seed=0,
                     **SOLO)
  with pytest.raises(TooManyUnreadable, match="unreadable"):
    next(it)


def test_worker_processes_resume_and_count_skips(tmp_path):
  root = write_folder(tmp_path, per_class=4, classes=("a", "b"))
  (root / "a" / "bad.png").write_bytes(b"\x89PNG broken")
  cfg = data_config(name="folder", path=str(root), num_workers=1)
  it = make_pipeline(cfg, batch_size=2, seed=0, **SOLO)
  take(it, 4)
  saved = it.get_state()
  expected = take(it, 4)
  skipped = unreadable_images(it)
  it.close()
  assert skipped >= 1
  fresh = make_pipeline(cfg, batch_size=2, seed=0, **SOLO)
  fresh.set_state(saved)
  for want, got in zip(expected, take(fresh, 4)):
    np.testing.assert_array_equal(ids(want), ids(got))
  fresh.close()


def test_tfds_source_through_data_source():
  tfds = pytest.importorskip("tensorflow_datasets")
  pytest.importorskip("tensorflow", reason="tfds.testing.mock_data encodes images with TensorFlow")
  cfg = data_config(name="imagenet2012", fit="center_crop", ten_crop=True)
  with tfds.testing.mock_data(num_examples=6):
    it = make_pipeline(cfg, batch_size=3, seed=0, **SOLO)
    b = take(it, 3)[-1]
  assert b["image"].shape == (3, 32, 32, 3) and b["image"].dtype == np.float32
  assert b["label"].dtype == np.int32 and b["label"].max() < 1000
  assert -1.0 <= b["image"].min() and b["image"].max() <= 1.0


def test_bad_sources_fail_with_the_field_named(tmp_path):
  with pytest.raises(DataError, match="data.path"):
    make_pipeline(data_config(name="folder", path=str(tmp_path / "missing")), 2, 0, **SOLO)
  (tmp_path / "empty_class").mkdir()
  with pytest.raises(DataError, match="no image files"):
    make_pipeline(data_config(name="folder", path=str(tmp_path)), 2, 0, **SOLO)
  with pytest.raises(DataError, match="data.split"):
    make_pipeline(data_config(split="validation"), 2, 0, **SOLO)
  with pytest.raises(DataError, match="data.fit"):
    make_pipeline(data_config(fit="stretch"), 2, 0, **SOLO)
  with pytest.raises(DataError, match="smaller than one global batch of 4096"):
    make_pipeline(data_config(split="test"), 4096, 0, num_epochs=1, **SOLO)
