"""Experiment files (MaskGIL and LlamaGen recipes) and the analytic FLOP count behind MFU."""
import pathlib

import pytest
from flax import nnx

from maskgil_jax import configlib
from maskgil_jax.configlib import recipes
from maskgil_jax.models.transformer import Transformer, num_params
from maskgil_jax.training import flops

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
# experiment (file:size) -> the model size it trains
FILES = {"maskgil.py:B": "B", "maskgil.py:L": "L", "maskgil.py:XL": "XL", "maskgil.py:XXL": "XXL",
         "maskgil_1b.py": "XXL", "llamagen.py:B": "B", "llamagen.py:L": "L",
         "llamagen.py:XL": "XL", "llamagen.py:XXL": "XXL"}


@pytest.mark.parametrize("name", sorted(FILES))
def test_experiment_files_follow_their_recipe(name):
  c = configlib.finalize(configlib.load_config(str(CONFIGS / name)))
  size = FILES[name]
  assert c.model.size == size and c.model.dtype == "bfloat16" and c.model.param_dtype == "float32"
  assert c.model.grid_size == 16 and c.model.codebook_size == 16384
  assert (c.mesh.data, c.mesh.fsdp) == ((1, -1) if size in ("XL", "XXL") else (-1, 1))
  assert c.total_steps == recipes.steps_for_epochs(300, c.batch_size)
  assert "python -m maskgil_jax.train" in (CONFIGS / name.partition(":")[0]).read_text()
  o = c.optim
  if name.startswith("maskgil"):
    assert c.model.layout == "maskgil" and c.objective.name == "mar"
    assert (o.lr, o.b1, o.b2, o.weight_decay, o.decay_matrices_only) == (1e-4, 0.9, 0.96, 1e-5,
                                                                         False)
    assert c.batch_size == 256 and c.objective.label_smoothing == 0.1
    assert c.data.name == "imagenet2012"
  else:
    assert c.model.layout == "llamagen" and c.objective.name == "ar"
    assert o.lr == (2e-4 if size in ("XL", "XXL") else 1e-4)
    assert (o.b1, o.b2, o.weight_decay, o.decay_matrices_only) == (0.9, 0.95, 0.05, True)
    assert c.batch_size == (512 if size == "XXL" else 256) and c.data.name == "codes"
  assert (o.grad_clip, o.schedule, c.objective.label_drop) == (1.0, "constant", 0.1)


def test_flops_count_every_matmul_and_full_bidirectional_attention():
  c = configlib.finalize(configlib.load_config(str(CONFIGS / "maskgil.py:B")))
  per_layer = 768 * 3 * 768 + 768 * 768 + 3 * 768 * 2048  # wqkv, wo, w1 w3 w2 (hidden 2048)
  matmul_params = 12 * per_layer + 768 * 16384  # + output head
  s = 257  # class token + 256 image tokens
  forward = 2 * s * matmul_params + 4 * s * s * 768 * 12
  assert flops.generator_step_flops(c) == pytest.approx(3 * 256 * forward)
  # the AR pass: 256 positions (prefix + 255 teacher-forced tokens), attention halved
  ar = configlib.finalize(configlib.load_config(str(CONFIGS / "llamagen.py:B")))
  forward_ar = 2 * 256 * matmul_params + 0.5 * 4 * 256 * 256 * 768 * 12
  assert flops.generator_step_flops(ar) == pytest.approx(3 * 256 * forward_ar)
  # cross-check the matmul parameters against the real model (embedding tables excluded)
  model = nnx.eval_shape(lambda: Transformer(ar.model, rngs=nnx.Rngs(0)))
  embeddings = 16384 * 768 + 1001 * 768
  norms = 12 * 2 * 768 + 768
  assert num_params(model) == matmul_params + embeddings + norms


def test_peak_table_and_override():
  assert flops.peak_tflops("TPU v5 lite") == 197.0
  assert flops.peak_tflops("TPU v4") == 275.0
  assert flops.peak_tflops("TPU v5") == 459.0
  assert flops.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
  assert flops.peak_tflops("NVIDIA H100 PCIe") == 756.0
  assert flops.peak_tflops("cpu") is None
  assert flops.peak_tflops("cpu", override=1.5) == 1.5
