"""The trainer's interval means (`training.metrics.IntervalMeans`, on `clu.metrics`): float32
sums on the device, float64 means on the host, the learning rate as logged, and no TensorFlow
brought in by clu."""
import numpy as np

import jax.numpy as jnp

from maskgil_jax.training.metrics import IntervalMeans
from worker import run_worker


def test_means_of_float32_sums_and_the_instant_learning_rate():
  steps = [dict(loss=0.1, accuracy=0.25, lr=1e-4), dict(loss=0.7, accuracy=0.5, lr=2e-4),
           dict(loss=1.3, accuracy=0.0, lr=3e-4)]
  means = IntervalMeans()
  for s in steps:
    means.add({**{k: jnp.float32(v) for k, v in s.items()}, "nonfinite": jnp.bool_(False)})
  got = means.take()
  assert set(got) == {"loss", "accuracy", "lr"}  # the guard flag is no metric
  loss = np.float32(0.1) + np.float32(0.7) + np.float32(1.3)  # summed in float32, in order
  assert got["loss"] == float(loss) / 3 and got["accuracy"] == 0.75 / 3
  assert got["lr"] == float(np.float32(3e-4))  # the last step's own value
  means.add({"loss": jnp.float32(2.0), "lr": jnp.float32(5e-4), "nonfinite": jnp.bool_(False)})
  assert means.take() == {"loss": 2.0, "lr": float(np.float32(5e-4))}  # a new interval


def test_clu_brings_no_tensorflow():
  loaded = run_worker("""
import json, sys
import jax.numpy as jnp
from maskgil_jax.training.metrics import IntervalMeans
m = IntervalMeans()
m.add({"loss": jnp.float32(1.0), "lr": jnp.float32(0.1), "nonfinite": jnp.bool_(False)})
m.take()
print("RESULT " + json.dumps(sorted(n for n in sys.modules
                                    if n.split(".")[0] in ("clu", "tensorflow", "tensorboard"))))
""", timeout=300)
  assert "clu.metrics" in loaded
  assert not any(n.split(".")[0] in ("tensorflow", "tensorboard") for n in loaded), loaded
