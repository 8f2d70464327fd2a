"""The wheel a user installs with `pip install .`: configs by name, the demo data, Python
>= 3.11, and no TensorFlow in the core requirements."""
import email
import subprocess
import sys
import zipfile

import pytest

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
