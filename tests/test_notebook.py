"""`notebooks/quickstart.ipynb` executed top to bottom (nbclient) on the CPU, with the demo's
steps reduced through its parameters cell; the notebook in git holds no outputs."""
import json
import os
import re

import pytest

from conftest import REPO

NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"

pytestmark = pytest.mark.slow


def test_notebook_in_git_has_no_outputs_and_hides_no_failures():
  nb = json.loads(NOTEBOOK.read_text())
  code = [c for c in nb["cells"] if c["cell_type"] == "code"]
  assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
  source = "\n".join("".join(c["source"]) for c in code)
  assert "| tail" not in source and "|| true" not in source
  assert "parameters" in code[0].get("metadata", {}).get("tags", [])


def test_notebook_runs_top_to_bottom_on_the_cpu(tmp_path):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  params = nb.cells[1]
  assert "parameters" in params.metadata.get("tags", [])
  workdir = tmp_path / "demo"
  params.source = re.sub(r'WORKDIR = "[^"]*"', f'WORKDIR = "{workdir}"', params.source)
  params.source += "\nTOKENIZER_STEPS = 2\nGENERATOR_STEPS = 2\nPER_CLASS = 1\n"
  client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                   resources={"metadata": {"path": str(REPO / "notebooks")}})
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  os.environ.update(env)
  client.execute()  # raises CellExecutionError, naming the cell, when a cell fails
  assert (workdir / "samples.png").is_file() and (workdir / "generator.safetensors").is_file()
  text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
  assert "backend cpu" in text and "mar: " in text
  assert "largest difference between the JAX and PyTorch logits" in text
