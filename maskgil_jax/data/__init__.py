"""Input pipelines (grain + TFDS, image folders, pre-tokenized codes) and the demo data.

`make_pipeline(config.data, batch_size, seed)` is the one entry the trainer calls; `sources`,
`code_shards` and `demo_set` are the datasets it reads, `preprocess` the pixels it cuts, and
`skipping` how unreadable images are dropped and counted. See docs/data.md.
"""
from maskgil_jax.data.captions import CAPTION_SOURCES
from maskgil_jax.data.pipelines import make_dataset, make_pipeline
from maskgil_jax.data.skipping import skipped_images

__all__ = ["CAPTION_SOURCES", "make_dataset", "make_pipeline", "skipped_images"]
