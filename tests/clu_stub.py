"""Log-only stand-ins for clu's writers where TensorFlow is not installed.

The trainer's TensorBoard writer (clu) imports TensorFlow, which the test environment does not
have; the tests read `metrics.jsonl`, which the trainer writes itself. `install()` puts minimal
`clu.metric_writers` / `clu.periodic_actions` modules in place only when TensorFlow is missing
(and changes nothing otherwise). Used in-process by a fixture and by subprocess workers.
"""
import importlib.util
import sys
import types


class _Writer:
  def write_scalars(self, step, values):
    pass

  def write_images(self, step, images):
    pass

  def flush(self):
    pass

  def close(self):
    pass


class _Progress:
  def __init__(self, **kwargs):
    pass

  def __call__(self, step, t=None):
    return False


def install() -> bool:
  """Whether the stand-ins were installed (TensorFlow missing)."""
  if importlib.util.find_spec("tensorflow") is not None:
    return False
  writers = types.ModuleType("clu.metric_writers")
  writers.create_default_writer = lambda *args, **kwargs: _Writer()
  progress = types.ModuleType("clu.periodic_actions")
  progress.ReportProgress = _Progress
  sys.modules["clu.metric_writers"] = writers  # `from clu import x` finds them here
  sys.modules["clu.periodic_actions"] = progress
  return True
