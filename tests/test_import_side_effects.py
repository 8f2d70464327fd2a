"""Importing the package touches no device: a multi-process job calls
`jax.distributed.initialize()` after the command module is imported, and JAX refuses that once a
backend exists (one `jnp.array` at module level was enough to kill every launched job)."""
import pkgutil

import maskgil_jax
from tests.worker import run_worker

CHECK = """
import importlib, json, pkgutil, sys
import maskgil_jax
from jax._src import xla_bridge
names = [m.name for m in pkgutil.walk_packages(maskgil_jax.__path__, "maskgil_jax.")
         if not m.name.endswith("__main__")]
culprit = None
for name in names:
  importlib.import_module(name)
  if xla_bridge._backends and culprit is None:
    culprit = name
print("RESULT " + json.dumps({"imported": names, "culprit": culprit}))
"""


def test_importing_every_module_initialises_no_backend():
  result = run_worker(CHECK, timeout=600)
  expected = [m.name for m in pkgutil.walk_packages(maskgil_jax.__path__, "maskgil_jax.")
              if not m.name.endswith("__main__")]
  assert result["imported"] == expected and len(expected) > 50
  assert result["culprit"] is None, f"importing {result['culprit']} initialised a JAX backend"


def test_the_check_sees_a_backend_created_at_import(tmp_path):
  """The probe itself works: a module that builds an array at import is caught."""
  script = CHECK.replace("for name in names:", "import jax.numpy as jnp; jnp.zeros(1)\nfor name in names:")
  result = run_worker(script, timeout=600)
  assert result["culprit"] == result["imported"][0]
