"""FID Inception-v3: parity with pytorch-fid on the random-weight fixture, loading, input pipelines.

The fixture's weights are not stored: `fid_weights` regenerates them from the numpy recipe of the
fixtures README (section 4), checked by its SHA-256.
"""
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maskgil_jax.interop import torch_io
from maskgil_jax.interop.inception_names import (WEIGHTS_FILE, WEIGHTS_URL, inception_rules,
                                                 load_fid_inception, load_inception_weights)
from maskgil_jax.interop.names import named_arrays
from maskgil_jax.interop.torch_io import CheckpointError
from maskgil_jax.models.inception import FIDInceptionV3, bilinear_matrix, resize_bilinear

RECIPE_SEED = 20261128
RECIPE_SHA256 = "0dbbc07d950a59a55ce5b93abe83a43cf2ed5d5b4106f331b6be4b652921fda3"


def recipe_weights(keys_file) -> dict[str, np.ndarray]:
  """The fixture's float32 weights, drawn in key-file order (section 4 of the README)."""
  rng = np.random.default_rng(RECIPE_SEED)
  weights = {}
  for line in keys_file.read_text().splitlines():
    if line.startswith("#") or not line.strip():
      continue
    _, key, shape, dtype, *_ = line.split("\t")
    if dtype == "int64":
      continue
    shape = tuple(int(s) for s in shape.strip("[]").split(",") if s)
    z = rng.standard_normal(shape)
    leaf = key.rsplit(".", 1)[1]
    if len(shape) >= 2:
      a = z * np.sqrt(2.0 / np.prod(shape[1:]))
    elif leaf == "weight":
      a = 1.0 + 0.1 * z
    elif leaf in ("bias", "running_mean"):
      a = 0.1 * z
    else:
      a = 1.0 + 0.1 * np.abs(z)
    weights[key] = a.astype(np.float32)
  return weights


@pytest.fixture(scope="module")
def fid_weights(fixtures_dir):
  return recipe_weights(fixtures_dir / "fid_inception_keys.txt")


@pytest.fixture(scope="module")
def fixture_io(fixtures_dir):
  return dict(np.load(fixtures_dir / "fid_inception_random_io.npz"))


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, fid_weights):
  path = tmp_path_factory.mktemp("inception") / "fid_inception.safetensors"
  torch_io.save_state_dict(fid_weights, path)
  return path


def test_recipe_reproduces_the_fixture_weights(fid_weights):
  digest = hashlib.sha256(b"".join(fid_weights[k].astype("<f4").tobytes()
                                   for k in sorted(fid_weights))).hexdigest()
  assert len(fid_weights) == 472
  assert digest == RECIPE_SHA256


def test_name_table_covers_the_weight_file(fid_weights):
  model = nnx.eval_shape(lambda: FIDInceptionV3())
  ours = named_arrays(model)
  assert set(ours) == set(fid_weights)  # same names, no parameter left out
  assert sum(int(np.prod(a.shape)) for a in ours.values()) == 23_850_960 + 34_432
  transforms = {r.ours: r.transform for r in inception_rules(model)}
  assert transforms["Mixed_6b.branch7x7_2.conv.weight"] == "conv"
  assert ours["Mixed_6b.branch7x7_2.conv.weight"].shape == (1, 7, 128, 128)  # OIHW [128,128,1,7]
  assert transforms["fc.weight"] == "linear" and transforms["fc.bias"] == "copy"


def test_pool3_and_logits_match_pytorch_fid(weights_file, fixture_io):
  model = load_fid_inception(weights_file)
  forward = jax.jit(lambda m, x: m(x, preprocessing="pytorch_fid"))  # the model is an argument
  out = forward(model, fixture_io["images"])
  np.testing.assert_allclose(out.pool3, fixture_io["pool3"], rtol=0, atol=1e-4)
  np.testing.assert_allclose(out.logits, fixture_io["logits"], rtol=0, atol=1e-4)
  assert out.spatial.shape == (4, 17 * 17 * 7)
  no_bias = model.fc(out.pool3, bias=False)  # ADM's Inception-Score logits
  np.testing.assert_allclose(no_bias + model.fc.bias[...], out.logits, rtol=0, atol=1e-5)


def test_every_weight_format_loads_the_same_parameters(tmp_path, fid_weights, weights_file):
  torch = pytest.importorskip("torch")
  pth = tmp_path / WEIGHTS_FILE
  state = {k: torch.from_numpy(v) for k, v in fid_weights.items()}
  state["Conv2d_1a_3x3.bn.num_batches_tracked"] = torch.tensor(0)  # as in the real file
  torch.save(state, pth)
  npz = tmp_path / "fid_inception.npz"
  np.savez(npz, **fid_weights)
  for path in (pth, npz, weights_file):
    loaded = load_inception_weights(path)
    assert set(loaded) - set(fid_weights) <= {"Conv2d_1a_3x3.bn.num_batches_tracked"}
    for name in ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.bn.running_var", "fc.bias"):
      np.testing.assert_array_equal(loaded[name], fid_weights[name])
  ours = named_arrays(load_fid_inception(pth))  # the counter is ignored, layouts converted
  np.testing.assert_array_equal(ours["Mixed_6b.branch7x7_2.conv.weight"],
                                fid_weights["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(ours["fc.weight"], fid_weights["fc.weight"].T)


def test_missing_weights_file_names_the_file_and_where_it_is_published(tmp_path):
  with pytest.raises(CheckpointError) as e:
    load_fid_inception(tmp_path / WEIGHTS_FILE)
  assert WEIGHTS_FILE in str(e.value) and WEIGHTS_URL in str(e.value)


def test_a_file_of_another_network_is_refused_with_each_problem(tmp_path, fid_weights):
  bad = dict(fid_weights)
  del bad["fc.bias"]
  bad["fc.weight"] = bad["fc.weight"][:1000]
  bad["extra.weight"] = np.zeros(3, np.float32)
  path = tmp_path / "bad.safetensors"
  torch_io.save_state_dict(bad, path)
  with pytest.raises(CheckpointError) as e:
    load_fid_inception(path)
  msg = str(e.value)
  assert "missing fc.bias" in msg and "unexpected extra.weight" in msg
  assert "mis-shaped fc.weight" in msg
  corrupt = tmp_path / "corrupt.npz"
  corrupt.write_bytes(b"not a zip")
  with pytest.raises(CheckpointError, match="corrupt.npz"):
    load_fid_inception(corrupt)


def test_wrong_image_layout_is_refused():
  model = nnx.eval_shape(lambda: FIDInceptionV3())
  for images in (jnp.zeros((2, 3, 64, 64), jnp.uint8), jnp.zeros((2, 64, 64), jnp.uint8)):
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
      jax.eval_shape(lambda m, x: m(x), model, images)
  with pytest.raises(ValueError, match="preprocess"):
    jax.eval_shape(lambda m, x: m(x, preprocessing="antialias"), model,
                   jnp.zeros((1, 64, 64, 3), jnp.uint8))


def test_full_size_shapes_for_any_input_size():
  model = nnx.eval_shape(lambda: FIDInceptionV3(dtype=jnp.bfloat16))
  for size in ((256, 256), (512, 384)):
    out = jax.eval_shape(lambda m, x: m(x), model, jnp.zeros((8, *size, 3), jnp.uint8))
    assert out.pool3.shape == (8, 2048) and out.spatial.shape == (8, 2023)
    assert out.logits.shape == (8, 1008) and out.pool3.dtype == jnp.float32


def test_bilinear_weights_follow_each_convention():
  up = bilinear_matrix(2, 4, half_pixel=False)  # TF1: src = i * 0.5
  np.testing.assert_allclose(up, [[1, 0], [0.5, 0.5], [0, 1], [0, 1]])
  up = bilinear_matrix(2, 4, half_pixel=True)  # torch: src = max((i + .5) * .5 - .5, 0)
  np.testing.assert_allclose(up, [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
  np.testing.assert_allclose(bilinear_matrix(299, 299, False), np.eye(299))
  np.testing.assert_allclose(bilinear_matrix(299, 299, True), np.eye(299))


def test_tf1_resize_matches_tensorflow():
  tf = pytest.importorskip("tensorflow")
  x = np.random.default_rng(0).integers(0, 256, (2, 40, 56, 3)).astype(np.float32)
  for half_pixel in (False, True):
    ref = tf.raw_ops.ResizeBilinear(images=x, size=[299, 299], align_corners=False,
                                    half_pixel_centers=half_pixel).numpy()
    ours = np.asarray(resize_bilinear(jnp.asarray(x), 299, half_pixel))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)  # values up to 255
