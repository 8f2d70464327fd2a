"""The wheel a user installs with `pip install .`: configs by name, the demo data, Python
>= 3.11, the licence, no TensorFlow in the core requirements, one Pillow range for a core and an
app install; and install hints that name the package's extras."""
import email
import importlib.metadata
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from packaging.requirements import Requirement

from conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  out = tmp_path_factory.mktemp("dist")
  proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                         "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (path,) = out.glob("maskgil_jax-*.whl")
  return zipfile.ZipFile(path)


def test_wheel_ships_the_configs_and_the_demo_data(wheel):
  names = set(wheel.namelist())
  shipped = {p.name for p in (REPO / "configs").glob("*.py")}
  assert {f"maskgil_jax/configs/{n}" for n in shipped} <= names
  assert {"maskgil_jax/data/demo/fashion_mnist_subset.npz",
          "maskgil_jax/data/demo/demo_classifier.npz"} <= names
  assert not any(n.startswith(("tests/", "configs/")) for n in names)


def test_wheel_metadata_python_and_lean_core(wheel):
  (meta_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
  meta = email.message_from_bytes(wheel.read(meta_name))
  assert meta["Requires-Python"] == ">=3.11"
  requires = meta.get_all("Requires-Dist")
  core = [r for r in requires if "extra ==" not in r]
  assert not any(r.lower().startswith(("tensorflow-cpu", "tensorflow>", "tensorflow ", "torch"))
                 for r in core), core
  extras = set(meta.get_all("Provides-Extra"))
  assert {"tpu", "cuda", "torch", "tfds", "app", "test"} <= extras


def test_wheel_carries_the_licence_and_the_project_metadata(wheel):
  names = wheel.namelist()
  (licence,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
  assert b"Apache License" in wheel.read(licence)
  (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
  meta = email.message_from_bytes(wheel.read(meta_name))
  assert meta["License-Expression"] == "Apache-2.0"
  assert meta["Name"] == "maskgil_jax" and meta["Version"]
  assert meta.get_all("Project-URL")
  assert "MaskGIL" in meta.get_payload()  # the README is the long description


def _core_requirement(wheel, name):
  (meta_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
  meta = email.message_from_bytes(wheel.read(meta_name))
  reqs = [Requirement(r) for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
  (req,) = [r for r in reqs if r.name.lower() == name]
  return req


def test_core_pillow_range_fits_inside_the_app_extras(wheel):
  """An app install must not downgrade the Pillow a core install chose: every Pillow the core
  accepts, Gradio accepts too."""
  core = _core_requirement(wheel, "pillow").specifier
  gradio = [Requirement(r) for r in importlib.metadata.requires("gradio")]
  (app,) = [r.specifier for r in gradio if r.name.lower() == "pillow" and not r.marker]
  candidates = ["9.5.0", "10.0.0", "11.3.0", "12.3.0", "13.0.0", "14.1.0"]
  accepted = list(core.filter(candidates))
  assert accepted and accepted == list(app.filter(accepted)), (str(core), str(app))


def test_install_hints_name_the_extras():
  """Every `pip install` a message or docstring of the package suggests installs maskgil_jax
  with an extra (or the checkout with one), never a bare third-party package."""
  hints = []
  for f in (REPO / "maskgil_jax").rglob("*.py"):
    hints += [(f.name, m) for m in re.findall(r"pip install ([^)`'\n]+)", f.read_text())]
  assert hints
  for name, hint in hints:
    assert re.match(r'"maskgil_jax\[[\w-]+\]"|-e "\.\[[\w-]+\]"', hint), (name, hint)


def test_missing_torch_names_the_torch_extra(tmp_path, monkeypatch):
  from maskgil_jax.interop import torch_io
  from maskgil_jax.errors import UserError
  pt = tmp_path / "weights.pt"
  pt.write_bytes(b"PK")
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
  for call in (lambda: torch_io.load_torch_file(pt),
               lambda: torch_io.save_state_dict({"w": np.zeros(2, np.float32)},
                                                tmp_path / "out.pt")):
    with pytest.raises(UserError, match=re.escape('pip install "maskgil_jax[torch]"')):
      call()
  assert not (tmp_path / "out.pt").exists()
