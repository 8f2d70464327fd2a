"""Image-caption sources, aspect buckets and the caption model through the trainer."""
import json

import numpy as np
import pytest
from PIL import Image

from maskgil_jax import configlib, data
from maskgil_jax.training import trainer
from maskgil_jax.configlib import ConfigError
from maskgil_jax.data import buckets, captions
from maskgil_jax.data.sources import DataError


def write_image(path, h, w, value=128):
  Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


@pytest.fixture()
def caption_folder(tmp_path):
  root = tmp_path / "imgs"
  (root / "sub").mkdir(parents=True)
  write_image(root / "wide.png", 10, 20, 50)
  (root / "wide.txt").write_text("a wide thing\n\nanother caption\n")
  write_image(root / "sub" / "tall.png", 20, 10, 200)
  (root / "sub" / "tall.txt").write_text("a tall thing")
  write_image(root / "square.png", 12, 12)
  (root / "square.txt").write_text("a square")
  write_image(root / "empty.png", 8, 8)
  (root / "empty.txt").write_text("  \n")
  write_image(root / "nocaption.png", 8, 8)
  (root / "broken.png").write_bytes(b"not a png")
  (root / "broken.txt").write_text("broken image")
  return root


def caption_config(**data_fields):
  c = configlib.load_config("tiny:maskgil_t2i")
  c.text.encoder = "tests/fixtures/t5_encoder_tiny"
  c.data.read_threads = c.data.prefetch = 0
  c.data.random_flip = False
  for k, v in data_fields.items():
    c.data[k] = v
  return configlib.finalize(c)


def test_folder_source_reads_captions_and_counts_the_empty(caption_folder):
  src = captions.CaptionFolderSource(caption_folder)
  names = [p.split("/")[-1] for p in src.paths]
  assert names == ["broken.png", "square.png", "wide.png", "tall.png"]
  assert src.skipped_empty == 2  # empty.txt and no .txt at all
  assert src.load(2)[1] == ("a wide thing", "another caption")
  assert src.size(2) == (10, 20) and src.size(3) == (20, 10)


def test_jsonl_manifest_merges_captions_per_image(caption_folder, tmp_path):
  manifest = tmp_path / "m.jsonl"
  lines = [{"image": "imgs/wide.png", "caption": "one"},
           {"image": "imgs/wide.png", "caption": ["two", ""]},
           {"image": "imgs/square.png", "caption": " "}]
  manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
  src = captions.CaptionJsonlSource(manifest)
  assert len(src) == 1 and src.load(0)[1] == ("one", "two") and src.skipped_empty == 1
  manifest.write_text('{"caption": "no image"}\n')
  with pytest.raises(DataError, match="line 1"):
    captions.CaptionJsonlSource(manifest)


def test_a_source_without_captions_is_an_error_naming_the_field(tmp_path):
  write_image(tmp_path / "a.png", 8, 8)
  with pytest.raises(DataError, match=r"data.path: no image with a non-empty caption .*\(1 images had no"):
    captions.CaptionFolderSource(tmp_path)


def test_bucket_sizes_must_be_multiples_of_the_downsampling():
  with pytest.raises(ConfigError, match=r"data.buckets\[1\]: 8x5 is not a multiple .* 2"):
    caption_config(buckets=((8, 8), (8, 5)))


def test_images_go_to_the_nearest_aspect_bucket():
  bs = ((8, 8), (8, 6), (6, 8))
  assert buckets.nearest((100, 100), bs) == 0
  assert buckets.nearest((40, 28), bs) == 1  # portrait
  assert buckets.nearest((28, 40), bs) == 2


def test_bucketed_batches_have_one_shape_each_skip_unreadable_and_resume_exactly(
    caption_folder):
  c = caption_config(name="caption_folder", path=str(caption_folder),
                     buckets=((8, 8), (8, 4), (4, 8)))
  it = data.make_pipeline(c.data, batch_size=1, seed=3, text=c.text)
  shapes = []
  for _ in range(6):
    batch = next(it)
    assert set(batch) == {"image", "text_ids", "text_mask"}
    shapes.append(batch["image"].shape)
  assert {(1, 8, 8, 3), (1, 8, 4, 3), (1, 4, 8, 3)} == set(shapes)
  assert data.unreadable_images(it) == 1  # broken.png, in the square bucket
  state = it.get_state()
  ahead = [next(it) for _ in range(5)]
  again = data.make_pipeline(c.data, batch_size=1, seed=3, text=c.text)
  again.set_state(state)
  for a, b in zip(ahead, (next(again) for _ in range(5))):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["text_ids"], b["text_ids"])


def class_folder(root):
  """Two classes of wide and tall images (a class source for aspect buckets)."""
  for label, name in enumerate(("ant", "bee")):
    (root / name).mkdir(parents=True)
    for i in range(3):
      write_image(root / name / f"wide{i}.png", 10, 20, 40 * i + 100 * label)
      write_image(root / name / f"tall{i}.png", 20, 10, 40 * i + 100 * label + 1)
  return root


def test_class_images_go_to_buckets_too_and_resume_exactly(tmp_path):
  c = configlib.load_config("tiny:maskgil")
  c.data.update(dict(name="folder", path=str(class_folder(tmp_path / "cls")), fit="pad",
                     buckets=((8, 8), (4, 8), (8, 4)), read_threads=0, prefetch=0))
  c = configlib.finalize(c)
  it = data.make_pipeline(c.data, batch_size=2, seed=1)
  batches = [next(it) for _ in range(6)]
  assert {b["image"].shape for b in batches} == {(2, 4, 8, 3), (2, 8, 4, 3)}  # no square image
  assert all(set(b) == {"image", "label"} for b in batches)
  state = it.get_state()
  ahead = [next(it) for _ in range(4)]
  again = data.make_pipeline(c.data, batch_size=2, seed=1)
  again.set_state(state)
  for a, b in zip(ahead, (next(again) for _ in range(4))):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  c.data.name, c.data.path = "codes", str(tmp_path)
  with pytest.raises(DataError, match="data.buckets: extracted codes have one grid"):
    data.make_pipeline(c.data, batch_size=2, seed=0)


def test_class_models_train_on_two_buckets_with_one_compiled_step_each(tmp_path, capsys):
  c = configlib.load_config("tiny:maskgil")
  c.data.update(dict(name="folder", path=str(class_folder(tmp_path / "cls")), fit="pad",
                     buckets=((8, 8), (8, 4)), read_threads=0, prefetch=0))
  c.model.codebook_size = c.tokenizer.codebook_size = 64  # the fixture tokenizer's
  c.tokenizer.ckpt = "tests/fixtures/llamagen_vq_tiny.safetensors"
  c.total_steps, c.log.every_steps, c.batch_size = 3, 1, 2
  out = trainer.train(configlib.finalize(c), tmp_path / "run")
  assert out["stopped"] == "done" and np.isfinite(out["metrics"]["loss"])
  text = "".join(capsys.readouterr())
  assert "aspect buckets 8x8, 8x4" in text
  assert text.count("compiled the train step for the") == 1


def test_caption_models_train_on_two_buckets_with_one_compiled_step_each(tmp_path, capsys):
  c = caption_config(name="demo_captions", fit="pad", buckets=((8, 8), (8, 6)))
  c.model.codebook_size = c.tokenizer.codebook_size = 64  # the fixture tokenizer's
  c.tokenizer.ckpt = "tests/fixtures/llamagen_vq_tiny.safetensors"
  c.total_steps, c.log.every_steps = 3, 1
  out = trainer.train(c, tmp_path)
  assert out["stopped"] == "done" and np.isfinite(out["metrics"]["loss"])
  printed = capsys.readouterr()
  text = printed.out + printed.err
  assert "aspect buckets 8x8, 8x6" in text
  assert text.count("compiled the train step for the") == 1  # the first bucket's is made up front
  # a class source for a caption model is refused before anything is built
  c.data.name = "demo"
  with pytest.raises(ConfigError, match="config.data.name: a caption model trains on"):
    trainer.train(c, tmp_path / "other")
