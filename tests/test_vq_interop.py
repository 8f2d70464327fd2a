"""LlamaGen VQ checkpoints: fixture parity, bit-exact round trip, key layout, clear errors."""

import jax
import numpy as np
import pytest
from flax import nnx

from maskgil_jax import loading
from maskgil_jax.configlib import tokenizer_config
from maskgil_jax.interop import vq_names
from maskgil_jax.interop.names import expected_torch_shapes
from maskgil_jax.interop.torch_io import CheckpointError, load_state_dict, save_state_dict
from maskgil_jax.models import vq

TINY = tokenizer_config("tiny")


def nhwc(a):
  return np.asarray(a).transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def io(fixtures_dir):
  return dict(np.load(fixtures_dir / "llamagen_vq_tiny_io.npz"))


@pytest.fixture(scope="module")
def tiny(fixtures_dir):
  return loading.load_tokenizer(fixtures_dir / "llamagen_vq_tiny.pt", TINY)


def test_fixture_parity(tiny, io):
  images = nhwc(io["images"])
  latents, (quant, _) = jax.jit(lambda m, x: (m.latents(x), m.quantized(x)))(tiny, images)
  np.testing.assert_allclose(latents, nhwc(io["pre_quant"]), atol=1e-5, rtol=0)
  np.testing.assert_allclose(quant, nhwc(io["quant"]), atol=1e-6, rtol=0)
  codes = vq.encode(tiny, images)
  np.testing.assert_array_equal(np.asarray(codes).reshape(-1), io["indices"])
  np.testing.assert_allclose(vq.decode(tiny, codes), nhwc(io["decoded"]), atol=1e-4, rtol=0)


def test_safetensors_gives_the_same_model(tiny, fixtures_dir):
  other = loading.load_tokenizer(fixtures_dir / "llamagen_vq_tiny.safetensors", TINY)
  for a, b in zip(jax.tree.leaves(tiny), jax.tree.leaves(other)):
    np.testing.assert_array_equal(a, b)


def test_export_reproduces_the_state_dict_bit_for_bit(tiny, fixtures_dir, tmp_path):
  original = load_state_dict(fixtures_dir / "llamagen_vq_tiny.pt")
  exported = vq_names.export_vq_state_dict(tiny)
  assert list(exported) == list(original)  # same keys, in torch's registration order
  save_state_dict(exported, tmp_path / "back.pt")
  back = load_state_dict(tmp_path / "back.pt")
  for key, value in original.items():
    assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
    assert back[key].tobytes() == value.tobytes(), key


def test_vq16_layout_matches_the_reference_key_list(reference):
  lines = (reference / "vq16_state_dict_keys.txt").read_text().splitlines()
  rows = [line.split(" ", 1) for line in lines if line and not line.startswith("#")]
  reference_keys = [(k, tuple(int(d) for d in s.strip("[]").split(","))) for k, s in rows]
  abstract = nnx.eval_shape(lambda: vq.VQModel(tokenizer_config("vq16"), rngs=nnx.Rngs(0)))
  shapes = expected_torch_shapes(abstract, vq_names.vq_rules(abstract))
  shapes[vq_names.BUFFER_KEY] = (65536,)
  layout = [k for k, _ in vq_names.state_dict_layout(abstract.spec)]
  # same keys and shapes; the order is checked against a real torch file in the round-trip
  # test (the list was derived by hand and puts the buffer after quantize.embedding.weight,
  # while torch writes a module's own buffers before its children's parameters)
  assert {k: shapes[k] for k in layout} == dict(reference_keys)
  assert len(layout) == len(reference_keys) == 344


def test_truncated_files_are_refused(fixtures_dir, tmp_path):
  for name in ("llamagen_vq_tiny.pt", "llamagen_vq_tiny.safetensors"):
    data = (fixtures_dir / name).read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(cut)):
      loading.load_tokenizer(cut, TINY)


def test_wrong_kind_of_checkpoint(fixtures_dir):
  with pytest.raises(CheckpointError, match="not a VQ tokenizer checkpoint"):
    loading.load_tokenizer(fixtures_dir / "llamagen_gpt_tiny.pt", TINY)


def test_shape_and_key_mismatches_are_named(fixtures_dir, tmp_path):
  bigger = tokenizer_config("tiny")
  bigger.codebook_size = 128
  with pytest.raises(CheckpointError, match=r"mis-shaped quantize.embedding.weight: "
                                            r"file \[64, 4\], expected \[128, 4\]"):
    loading.load_tokenizer(fixtures_dir / "llamagen_vq_tiny.safetensors", bigger)
  sd = load_state_dict(fixtures_dir / "llamagen_vq_tiny.pt")
  del sd["decoder.conv_out.bias"], sd[vq_names.BUFFER_KEY]
  sd["extra.weight"] = np.zeros(3, np.float32)
  save_state_dict(sd, tmp_path / "edited.safetensors")
  with pytest.raises(CheckpointError) as e:
    loading.load_tokenizer(tmp_path / "edited.safetensors", TINY)
  for part in ("missing decoder.conv_out.bias [3]", "unexpected extra.weight [3]",
               f"missing {vq_names.BUFFER_KEY} [65536]"):
    assert part in str(e.value)
  lfq = tokenizer_config("tiny_lfq")  # no codebook, 6 latent channels
  with pytest.raises(CheckpointError, match="unexpected quantize.embedding.weight"):
    loading.load_tokenizer(fixtures_dir / "llamagen_vq_tiny.pt", lfq)


def test_missing_paths_and_directories(tmp_path):
  with pytest.raises(CheckpointError, match="no such file"):
    loading.load_tokenizer(tmp_path / "absent.pt", TINY)
  with pytest.raises(CheckpointError):  # an empty folder holds no orbax tokenizer checkpoint
    loading.load_tokenizer(tmp_path, TINY)


def test_usage_buffer_round_trips(fixtures_dir):
  sd = load_state_dict(fixtures_dir / "llamagen_vq_tiny.safetensors")
  sd[vq_names.BUFFER_KEY] = np.arange(65536, dtype=np.float32) % 64
  abstract = nnx.eval_shape(lambda: vq.VQModel(TINY, rngs=nnx.Rngs(0)))
  model = vq_names.import_vq_state_dict(abstract, sd)
  assert isinstance(abstract.quantize.codebook_used.get_value(), jax.ShapeDtypeStruct)  # unchanged
  np.testing.assert_array_equal(model.quantize.codebook_used[...], sd[vq_names.BUFFER_KEY])
  np.testing.assert_array_equal(vq_names.export_vq_state_dict(model)[vq_names.BUFFER_KEY],
                                sd[vq_names.BUFFER_KEY])
