"""The parameter report: LlamaGen sizes from abstract shapes, and the command itself."""
import subprocess
import sys

import pytest

from maskgil_jax import configlib
from maskgil_jax.params import report

LLAMAGEN_C2I = {"B": 110.89e6, "L": 342.91e6, "XL": 774.70e6, "XXL": 1410.97e6}


@pytest.mark.parametrize("size", sorted(LLAMAGEN_C2I))
def test_llamagen_sizes_within_a_tenth_of_a_percent(size):
  c = configlib.base_config(size, "llamagen")
  c.objective.name = "ar"
  _, total = report(configlib.finalize(c).model)
  assert abs(total - LLAMAGEN_C2I[size]) / LLAMAGEN_C2I[size] < 1e-3, total


def test_command_prints_table_and_total():
  out = subprocess.run([sys.executable, "-m", "maskgil_jax.params", "--config",
                        "configs/tiny.py:llamagen"], capture_output=True, text=True, check=True,
                       cwd=configlib.load.REPO_CONFIGS.parent).stdout
  assert "layers.attention.wqkv.weight" in out and "('layers', 'embed', 'qkv')" in out
  assert out.strip().splitlines()[-1] == "params: 197632"


def test_command_bad_value_is_one_line_error():
  r = subprocess.run([sys.executable, "-m", "maskgil_jax.params", "--config", "configs/tiny.py",
                      "--config.model.dim=66"], capture_output=True, text=True,
                     cwd=configlib.load.REPO_CONFIGS.parent)
  assert r.returncode == 2
  assert r.stderr.strip() == "error: config.model.dim: 66 is not divisible by model.n_head=4"


def test_the_codes_gpt_1b_is_its_own_model_not_xxl():
  # the public code's GPT_1B: 22 layers, 32 heads, width 2048 (its comment: 1.2B)
  c = configlib.base_config("GPT_1B", "llamagen")
  c.objective.name = "ar"
  m = configlib.finalize(c).model
  assert (m.n_layer, m.n_head, m.dim, m.dim // m.n_head) == (22, 32, 2048, 64)
  _, total = report(m)
  assert 1.15e9 < total < 1.25e9


def test_a_tokenizer_config_reports_the_tokenizer():
  out = subprocess.run([sys.executable, "-m", "maskgil_jax.params", "--config",
                        "configs/vq16.py"], capture_output=True, text=True, check=True,
                       cwd=configlib.load.REPO_CONFIGS.parent).stdout
  assert out.startswith("tokenizer: kind vq, 16384 codes x 8")
  assert "quantize.embedding.weight" in out and "layers." not in out
  assert out.strip().splitlines()[-1] == "params: 71883403"  # LlamaGen's VQ-16 (reference.md)
