"""Every mesh of 8 devices gives the numbers of one device: MAR and AR train steps and the
three decoders, at one and at two examples per batch shard.

One example per batch shard is where XLA once returned the batch rows of a row-parallel matmul
swapped between devices (`parallel.rules.gather_for_use` says why); the older test at 8
examples on (2, 2, 2) did not see it. All cases run in one subprocess (XLA_FLAGS must be set
before JAX starts), compiled without optimisation to keep it short.
"""
import json
import textwrap

import numpy as np
import pytest
from worker import run_worker


MESHES = [(8, 1, 1), (1, 8, 1), (1, 1, 8), (4, 2, 1), (4, 1, 2), (2, 4, 1), (1, 4, 2),
          (2, 1, 4), (1, 2, 4), (2, 2, 2)]

WORKER = textwrap.dedent("""
    import os, json, sys, functools
    os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=8 "
                               "--xla_backend_optimization_level=0 "
                               "--xla_llvm_disable_expensive_passes=true")
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from maskgil_jax import configlib
    from maskgil_jax.decode import DecodeSettings, generate_tokens
    from maskgil_jax.models.transformer import Transformer
    from maskgil_jax.parallel import mesh as mesh_lib, rules as rules_lib
    from maskgil_jax.training import objectives, optim, state as state_lib, steps

    meshes = [tuple(m) for m in json.loads(sys.argv[1])]
    # eps 1e-3: Adam's update moves by at most lr * dg / eps for a float rounding difference dg;
    # no remat: the same numbers from a smaller program
    c = configlib.finalize(configlib.load_config("tiny", {
        "optim.lr": 1e-3, "optim.eps": 1e-3, "model.remat_policy": "none"}))
    tx = optim.make_optimizer(c.optim, c.total_steps)
    lr = optim.learning_rate(c.optim, c.total_steps)
    mar_step, ar_step = (steps.make_generator_step(
        lambda m, b, k, loss=loss: loss(m, b, k, c.objective), tx, lr)
        for loss in (objectives.mar_loss, objectives.ar_loss))
    settings = DecodeSettings.create(steps=4, ar_tokens=6)
    largest = max(p * s[0] * s[1] for s in meshes for p in (1, 2))
    rng = np.random.default_rng(0)
    data = {"codes": rng.integers(0, 512, (largest, 4, 4)).astype(np.int32),
            "label": rng.integers(0, 10, (largest,)).astype(np.int32)}

    def model_fn():  # a random (not zero) output layer, so that decoding depends on the model
      m = Transformer(c.model, rngs=nnx.Rngs(0))
      m.output.weight[...] = 0.5 * jax.random.normal(jax.random.key(1), m.output.weight.shape)
      return m

    def init():
      return state_lib.init_train_state(model_fn(), tx, ema=False)

    def everything(mar_state, ar_state, batch, key, model, keys, train=True, decode=True):
      # a step of each objective and the three decoders: one program per case
      out = {}
      for name, step, state in (("mar", mar_step, mar_state), ("ar", ar_step, ar_state))[
          :2 if train else 0]:
        state, metrics = step(state, batch, key)
        leaves = [x.ravel()[:64] for x in jax.tree.leaves(state.params)]  # after the update
        out[name] = {"loss": metrics["loss"], "grad_norm": metrics["grad_norm"],
                     "params": leaves}
      for method in ("mar", "ar", "hybrid")[:3 if decode else 0]:
        out["decode_" + method] = generate_tokens(model, batch["label"], keys, settings, method)
      return out

    def run(shape, batch_size, train=True, decode=True):
      m = c.mesh.copy_and_resolve_references()
      m.data, m.fsdp, m.tensor = shape
      mesh = mesh_lib.make_mesh(m, jax.devices()[:int(np.prod(shape))])
      rules = rules_lib.make_rules()
      jax.clear_caches()  # dozens of executables otherwise exhaust LLVM's code memory
      with jax.set_mesh(mesh), rules_lib.axis_rules(rules):
        _, sh = state_lib.abstract_sharded(init, mesh, rules)
        gb = mesh_lib.global_batch({k: v[:batch_size] for k, v in data.items()}, mesh)
        keys = jax.device_put(
            jax.vmap(lambda i: jax.random.fold_in(jax.random.key(3), i))(jnp.arange(batch_size)),
            mesh_lib.batch_sharding(mesh))
        fn = functools.partial(everything, train=train, decode=decode)
        states = [state_lib.create_sharded(init, sh) for _ in range(3)]
        out = jax.jit(fn)(states[0], states[1], gb, jax.random.key(0), states[2].params, keys)
        return jax.tree.map(lambda x: np.asarray(jax.device_get(x)).tolist(), out)

    # one device: the steps at every batch size used below, the decoders once at the largest
    # (rows are independent, one key and label each: a batch of b is the first b rows)
    results = {"1,1,1/decode": run((1, 1, 1), largest, train=False)}
    for size in sorted({p * s[0] * s[1] for s in meshes for p in (1, 2)}):
      results[f"1,1,1/{size}"] = run((1, 1, 1), size, decode=False)
    for shape in meshes:
      for per_shard in (1, 2):
        b = per_shard * shape[0] * shape[1]
        results[f"{','.join(map(str, shape))}/{b}"] = run(shape, b)
    print("RESULT", json.dumps(results))
""")


@pytest.fixture(scope="module")
def matrix():
  return run_worker(WORKER, json.dumps(MESHES), timeout=1800)


CASES = [(m, p) for m in MESHES for p in (1, 2)]


@pytest.mark.parametrize("shape,per_shard", CASES, ids=[f"{m}x{p}" for m, p in CASES])
def test_mesh_equals_one_device(matrix, shape, per_shard):
  b = per_shard * shape[0] * shape[1]
  got, ref = matrix[f"{','.join(map(str, shape))}/{b}"], matrix[f"1,1,1/{b}"]
  decoded = matrix["1,1,1/decode"]
  for objective in ("mar", "ar"):
    np.testing.assert_allclose(got[objective]["loss"], ref[objective]["loss"], rtol=2e-6,
                               err_msg=f"{objective} loss")
    np.testing.assert_allclose(got[objective]["grad_norm"], ref[objective]["grad_norm"],
                               rtol=2e-5, err_msg=f"{objective} grad norm")
    for a, r in zip(got[objective]["params"], ref[objective]["params"]):
      np.testing.assert_allclose(a, r, atol=2e-6, err_msg=f"{objective} parameters")
  for method in ("mar", "ar", "hybrid"):
    assert got["decode_" + method] == decoded["decode_" + method][:b], method


def test_the_reference_is_not_trivial(matrix):
  """The decoders draw different tokens for different rows; the losses depend on the batch."""
  decoded = matrix["1,1,1/decode"]
  for method in ("mar", "ar", "hybrid"):
    rows = decoded["decode_" + method]
    assert len({tuple(row) for row in rows}) == len(rows), method
  for objective in ("mar", "ar"):
    assert matrix["1,1,1/4"][objective]["loss"] != matrix["1,1,1/8"][objective]["loss"]
