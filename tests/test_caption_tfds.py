"""The TFDS caption source (`data.caption_key`) on `coco_captions`, the documented example.

`tfds.testing.mock_data`'s random records do not work for `coco_captions` through
`tfds.data_source`: its generator gives the two fields of the `captions` sequence different
lengths and TFDS's own encoder refuses the example ("The length of all elements of one
sequence should be the same"). So the mock here serves chosen examples instead: they are
serialized with the real `coco_captions` feature spec and read back by TFDS's data source
class, which deserializes and decodes them (the image left encoded by `SkipDecoding`) exactly
as it does records of a prepared ArrayRecord file.
"""
import dataclasses

import numpy as np
import pytest

from maskgil_jax import data, extract_text
from maskgil_jax.data import captions
from maskgil_jax.data.preprocess import UnreadableImage
from maskgil_jax.data.sources import DataError
from maskgil_jax.text.tokenizer import T5Tokenizer

from test_caption_data import caption_config

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("tensorflow", reason="TFDS serializes the mock examples with TensorFlow")
from tensorflow_datasets.core.data_sources import base  # noqa: E402 (needs the skip above)

# (grey value, height, width, captions) of each example, in record order
IMAGES = [
    (30, 12, 20, ["a wide dark thing", "the dark thing again", "a third dark caption"]),
    (130, 16, 16, ["", "   "]),  # only empty captions: skipped when read, and counted
    (230, 20, 12, ["a tall light thing"]),
    (90, 16, 16, ["  a padded caption  ", ""]),
]
KEY = "captions/text"


@dataclasses.dataclass(repr=False)
class RecordList(base.BaseDataSource):
  """Serialized records, read back through TFDS's data source deserialization and decoders."""
  records: list = dataclasses.field(default_factory=list)

  def __post_init__(self):
    self.data_source = self.records


def coco_example(i: int, value: int, h: int, w: int, caps: list[str]) -> dict:
  return {"image": np.full((h, w, 3), value, np.uint8), "image/filename": f"{i}.jpg",
          "image/id": i, "captions": {"text": caps, "id": list(range(len(caps)))},
          "objects": {"id": [], "area": [], "bbox": np.zeros((0, 4), np.float32), "label": [],
                      "is_crowd": []}}


@pytest.fixture()
def coco_captions():
  """`tfds.data_source('coco_captions', ...)` serves IMAGES while the fixture is active."""
  def as_data_source(builder, split, decoders=None, **_):
    features = builder.info.features
    records = [features.serialize_example(coco_example(i, *x)) for i, x in enumerate(IMAGES)]
    return RecordList(dataset_info=builder.info, split=split, decoders=decoders,
                      records=records)

  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    yield


def coco_config(**fields):
  return caption_config(**{"name": "coco_captions", "split": "train", "caption_key": KEY,
                           **fields})


def which_image(batch_image: np.ndarray) -> int:
  """The IMAGES entry a batch row shows: the solid grey nearest its mean (JPEG is lossy)."""
  grey = (float(batch_image.mean()) + 1) * 127.5
  return int(np.argmin([abs(grey - x[0]) for x in IMAGES]))


def test_records_read_with_their_captions_sizes_and_names(coco_captions):
  src = captions.open_caption_source(coco_config().data)
  assert isinstance(src, captions.TfdsCaptionSource)
  assert len(src) == 4 and src.skipped_empty == 0  # the set is not scanned when it opens
  pixels, caps = src.load(src[0])
  assert pixels.shape == (12, 20, 3) and pixels.dtype == np.uint8
  assert abs(float(pixels.mean()) - 30) < 3
  assert caps == tuple(IMAGES[0][3])
  assert src.captions_of(src[3]) == ("a padded caption",)  # stripped, the empty one dropped
  assert src.size(src[0]) == (12, 20) and src.size(src[2]) == (20, 12)  # from the header
  assert src.captions_of(src[1]) == ()
  with pytest.raises(UnreadableImage, match="no non-empty caption"):
    src.load(src[1])
  assert src.describe(src[1]) == "coco_captions/train example 1"


def test_the_pipeline_draws_every_caption_over_epochs_and_counts_the_empty_image(coco_captions):
  """Batch size 1, in record order (unshuffled, so the empty image never neighbours itself
  across an epoch's end and is met exactly once an epoch): 4 stream positions per epoch, one of
  them the image with only empty captions, which is replaced by the next readable one and
  counted. The caption is still drawn anew every epoch."""
  c = coco_config()
  tokenizer = T5Tokenizer(c.text.encoder)
  caption_of_ids = {}
  for i, (_, _, _, caps) in enumerate(IMAGES):
    for cap in captions.clean_captions(caps):
      ids, _ = tokenizer([cap], c.text.max_length)
      caption_of_ids[ids[0].tobytes()] = (i, cap)
  epochs = 16
  it = data.make_pipeline(c.data, batch_size=1, seed=0, text=c.text, shuffle=False)
  seen = {i: set() for i in range(len(IMAGES))}
  for _ in range(epochs * len(IMAGES)):
    batch = next(it)
    assert batch["image"].shape == (1, 8, 8, 3)
    image, cap = caption_of_ids[batch["text_ids"][0].tobytes()]
    assert which_image(batch["image"][0]) == image  # the caption drawn is the image's own
    seen[image].add(cap)
  assert seen[0] == set(IMAGES[0][3])  # each of the three captions drawn in some epoch
  assert seen[1] == set() and seen[2] == {"a tall light thing"}
  assert seen[3] == {"a padded caption"}
  assert data.unreadable_images(it) == epochs  # the empty image, once per epoch


def test_extract_text_counts_the_empty_image_and_features_know_the_caption_key(
    coco_captions, tmp_path):
  c = coco_config()
  out = tmp_path / "feats"
  s = extract_text.extract_text(c, out, shard_size=4, progress=False)
  assert s["captions"] == 5 and s["skipped_empty"] == 1
  c.data.text_features = str(out)
  batch = next(data.make_pipeline(c.data, batch_size=1, seed=0, text=c.text))
  assert batch["caption"].shape[:2] == (1, c.text.max_length) and batch["caption_mask"].any()
  # features of one caption feature are not read as another's
  c.data.caption_key = "image/filename"
  with pytest.raises(DataError, match="data.text_features: .* was extracted from "
                     "coco_captions::train:captions/text, not coco_captions::train:image/filename"):
    data.make_pipeline(c.data, batch_size=1, seed=0, text=c.text)


@pytest.mark.parametrize("key, message", [
    ("caption/text", r"data.caption_key: 'caption/text' is not a feature of coco_captions "
                     r"\(text features: \['captions/text', 'image/filename'\]; all: "),
    ("captions", r"data.caption_key: 'captions' in coco_captions: the text features are "
                 r"\['captions/text', 'image/filename'\]; 'captions' is a group of features "
                 r"\(captions/id, captions/text\): name the text one"),
    ("image/id", r"'image/id' is not text"),
])
def test_a_caption_key_that_is_no_text_feature_is_refused_when_the_source_opens(
    coco_captions, key, message):
  with pytest.raises(DataError, match=message):
    captions.open_caption_source(coco_config(caption_key=key).data)


def test_the_commands_name_a_missing_caption_feature(coco_captions, capsys, tmp_path):
  args = ["--config", "tiny:maskgil_t2i", "--out", str(tmp_path / "f"),
          "--config.data.name=coco_captions",
          "--config.data.split=train", "--config.data.caption_key=caption",
          "--config.text.encoder=tests/fixtures/t5_encoder_tiny"]
  assert extract_text.main(args) == 2
  errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
  assert not (tmp_path / "f").exists()  # refused before anything is written
  assert len(errors) == 1 and errors[0].startswith(
      "error: data.caption_key: 'caption' is not a feature of coco_captions (text features: "
      "['captions/text', 'image/filename']; all: ['captions/id', 'captions/text', 'image', ")
