"""Input pipelines (grain + TFDS, image folders, pre-tokenized codes) and the demo data.

`pipelines.make_pipeline(config.data, ...)` is the one entry the trainer calls; `sources`,
`code_shards` and `demo_set` are the datasets it reads, `preprocess` the pixels it cuts, and
`skipping` how unreadable images are dropped and counted. See docs/data.md.
"""
