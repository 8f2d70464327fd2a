"""Shared test set-up: tiny CPU runs, and the reference fixtures shipped in `tests/fixtures/`.

The fixtures were made with the reference code (`tests/fixtures/README.md` says how). Each model
is shipped in the formats the tests need; the LlamaGen VQ weights (15 MB) are shipped once, as
`.safetensors`, and their `.pt` twin is written from them for the session with `torch.save`, so
the PyTorch reader is tested on both formats without a second copy in the repository.
"""
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def _pt_twin(src: pathlib.Path, order: pathlib.Path, dst: pathlib.Path) -> None:
  """`src` saved as torch would: keys in the reference file's registration order."""
  import torch
  from safetensors.torch import load_file
  tensors = load_file(str(src))
  keys = [k for k in order.read_text().splitlines() if k and not k.startswith("#")]
  assert sorted(keys) == sorted(tensors), "key order list does not match the weights"
  torch.save({"model": {k: tensors[k] for k in keys}}, str(dst))  # as LlamaGen saves it


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory) -> pathlib.Path:
  """The shipped fixtures (linked) plus the `.pt` twin of the VQ weights."""
  folder = tmp_path_factory.mktemp("fixtures")
  for f in FIXTURES.iterdir():
    (folder / f.name).symlink_to(f)
  _pt_twin(FIXTURES / "llamagen_vq_tiny.safetensors", FIXTURES / "llamagen_vq_tiny_pt_order.txt",
           folder / "llamagen_vq_tiny.pt")
  return folder


@pytest.fixture(scope="session")
def reference(fixtures_dir) -> pathlib.Path:
  """Where the reference key lists live (shipped beside the fixtures)."""
  return fixtures_dir
