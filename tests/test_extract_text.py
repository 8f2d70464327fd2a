"""extract_text: resumable shards of T5 caption features equal to encoding on the fly."""
import jax.numpy as jnp
import numpy as np
import pytest

from maskgil_jax import data, extract_text
from maskgil_jax.configlib import ConfigError
from maskgil_jax.data import text_features
from maskgil_jax.data.sources import DataError
from maskgil_jax.text import encoder as text_encoder

from test_caption_data import caption_config, caption_folder  # noqa: F401 (a fixture)


def test_features_equal_encoding_on_the_fly_and_extraction_resumes(caption_folder, tmp_path):
  out = tmp_path / "feats"
  c = caption_config(name="caption_folder", path=str(caption_folder),
                     buckets=((8, 8), (8, 4), (4, 8)))
  s = extract_text.extract_text(c, out, shard_size=3, batch_size=2, progress=False)
  assert s["shards_written"] == 2 and s["captions"] == 5 and s["skipped_empty"] == 2
  # an interrupted run (one shard missing) is finished by running again
  text_features.shard_paths(out, 3, 4)[1].unlink()
  s = extract_text.extract_text(c, out, shard_size=3, progress=False)
  assert (s["shards_written"], s["shards_present"]) == (1, 1)

  enc = text_encoder.load_text_encoder(c.text.encoder, max_length=c.text.max_length)
  fly = data.make_pipeline(c.data, batch_size=1, seed=5, text=c.text)
  c.data.text_features = str(out)
  pre = data.make_pipeline(c.data, batch_size=1, seed=5, text=c.text)
  for _ in range(6):
    a, b = next(fly), next(pre)
    np.testing.assert_array_equal(a["image"], b["image"])
    feats = enc.model(jnp.asarray(a["text_ids"]), jnp.asarray(a["text_mask"]))
    want, mask = text_encoder.left_pad(np.asarray(feats), a["text_mask"])
    np.testing.assert_array_equal(b["caption_mask"], mask)
    np.testing.assert_allclose(b["caption"], want, atol=1e-5)

  # other settings into the same folder are refused; so is a folder of another source
  c.text.max_length = 60
  with pytest.raises(ConfigError, match="other settings"):
    extract_text.extract_text(c, out, shard_size=3, progress=False)


def test_the_command_writes_and_summarises(caption_folder, tmp_path, capsys):
  args = ["--config", "tiny:maskgil_t2i", "--out", str(tmp_path / "f"),
          "--config.data.name=caption_folder", f"--config.data.path={caption_folder}",
          "--config.text.encoder=tests/fixtures/t5_encoder_tiny"]
  assert extract_text.main(args) == 0
  assert "encoded 5 captions into 1 new shards" in capsys.readouterr().out
  assert extract_text.main(args[:-1] + ["--config.data.name=demo"]) == 2
  assert "config.data.name: 'demo' has no captions" in capsys.readouterr().err


@pytest.mark.parametrize("which, array, message", [
    ("features", np.array([{"a": 1}, None], dtype=object), "is not a readable array file"),
    ("features", np.zeros((3, 5), np.float64), "holds float64 [3, 5], not float32 [n, "),
    ("index", np.zeros((2, 3), np.int64), "holds int64 [2, 3], not int64 [n, 4]"),
    ("index", b"not an array", "is not a readable array file"),
])
def test_a_bad_shard_file_is_refused_when_the_folder_opens(tmp_path, which, array, message):
  """A features folder whose shard is an array of Python objects (or another layout) is one
  DataError naming the file when it opens, not a traceback from the input pipeline."""
  meta = text_features.FeaturesMeta(width=4, max_length=6, num_records=2, shard_size=2,
                                    source="caption_folder:x:train")
  text_features.write_meta(tmp_path, meta)
  text_features.write_shard(tmp_path, 0, 2, [(0, 0, np.ones((2, 4))), (1, 0, np.ones((3, 4)))])
  text_features.TextFeatureStore(tmp_path)  # as written: opens
  path = text_features.shard_paths(tmp_path, 0, 2)[which == "index"]
  if isinstance(array, bytes):
    path.write_bytes(array)
  else:
    np.save(path, array, allow_pickle=True)
  with pytest.raises(DataError) as e:
    text_features.TextFeatureStore(tmp_path)
  assert f"data.text_features: {path} " in str(e.value) and message in str(e.value)
