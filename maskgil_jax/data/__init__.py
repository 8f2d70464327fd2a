"""Input pipelines (grain + TFDS, image folders, pre-tokenized codes) and the demo data.

`make_pipeline(config.data, batch_size, seed)` is the one entry the trainer calls; `sources`,
`code_shards` and `demo_set` are the datasets it reads, `preprocess` the pixels it cuts,
`global_batches` how processes share one stream, and `unreadable` how unreadable images are
replaced and counted. See docs/data.md.
"""
from maskgil_jax.data.captions import CAPTION_SOURCES
from maskgil_jax.data.pipelines import make_dataset, make_pipeline
from maskgil_jax.data.unreadable import unreadable_images

__all__ = ["CAPTION_SOURCES", "make_dataset", "make_pipeline", "unreadable_images"]
