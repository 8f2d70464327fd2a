"""Input pipelines (grain + TFDS, image folders, pre-tokenized codes) and the demo data."""
