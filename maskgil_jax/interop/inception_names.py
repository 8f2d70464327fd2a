"""The FID Inception-v3 weight file: its name table and loading it from a user-given path.

The standard file is pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, the TensorFlow 2015
graph's weights under torchvision `Inception3` keys. Our parameter paths are those keys, so the
table pairs each path with itself; the transform follows from the layer kind named in the key
(`*.conv.weight` OIHW -> HWIO, `fc.weight` [out, in] -> [in, out], BatchNorm vectors and
`fc.bias` copied), never from a shape. `num_batches_tracked` counters are ignored.

Nothing is downloaded: the user passes the file. `.pth`/`.pt` go through
`torch.load(weights_only=True)`; a converted `.safetensors` or `.npz` with the same keys needs
no torch (convenient on accelerator hosts).
"""
from __future__ import annotations

import os
import pathlib
import zipfile

import jax.numpy as jnp
import numpy as np
from flax import nnx

from maskgil_jax.interop.names import Rule, import_state_dict, named_arrays
from maskgil_jax.interop.torch_io import CheckpointError, load_state_dict
from maskgil_jax.models.inception import FIDInceptionV3

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               + WEIGHTS_FILE)


def _transform(path: str) -> str:
  if path.endswith(".conv.weight"):
    return "conv"
  if path == "fc.weight":
    return "linear"
  return "copy"


def inception_rules(model: FIDInceptionV3) -> list[Rule]:
  """One Rule per parameter: same name on both sides, transform chosen by the layer kind."""
  return [Rule(path, path, _transform(path)) for path in named_arrays(model)]


def _load_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  except (ValueError, OSError, zipfile.BadZipFile) as e:
    raise CheckpointError(f"{path}: not a readable .npz of weights ({e})") from e


def load_inception_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The flat {torch key: array} of a `.pth`/`.pt`/`.safetensors`/`.npz` Inception file."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise CheckpointError(
        f"{path}: FID Inception weights not found. Download {WEIGHTS_FILE} (pytorch-fid's "
        f"port of the TensorFlow 2015 Inception graph) from {WEIGHTS_URL} and pass its path; "
        "nothing is downloaded at run time.")
  if path.suffix == ".npz":
    return _load_npz(path)
  return load_state_dict(path)


def load_fid_inception(path: str | os.PathLike, *, dtype=jnp.float32,
                       precision: str = "highest") -> FIDInceptionV3:
  """The FID Inception-v3 with the weights of `path`; every key and shape is checked first."""
  state_dict = load_inception_weights(path)
  abstract = nnx.eval_shape(lambda: FIDInceptionV3(dtype=dtype, precision=precision))
  ignore = [k for k in state_dict if k.endswith("num_batches_tracked")]
  return import_state_dict(abstract, state_dict, inception_rules(abstract), source=str(path),
                           ignore=ignore)

