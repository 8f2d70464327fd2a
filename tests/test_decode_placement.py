"""Images from the tokenizer do not depend on where the batch is: one device, 2 or 8, batch 32
or 16 or 13, an image first or last in its group give the same pixels, bit for bit
(`decode.images.decode_each`, groups of 4). Decoding the batch at once does not: the same codes
gave pixels off by one after rounding (the first check says the test would see it). In a
subprocess: XLA_FLAGS must be set before JAX starts."""
import textwrap
from worker import run_worker


WORKER = textwrap.dedent("""
    import os, json
    os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=8 "
                               "--xla_backend_optimization_level=0 "
                               "--xla_llvm_disable_expensive_passes=true")
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from maskgil_jax import configlib
    from maskgil_jax.models.vq import VQModel
    from maskgil_jax.decode import images as images_lib
    from maskgil_jax.parallel import mesh as mesh_lib, rules as rules_lib

    c = configlib.finalize(configlib.load_config("tiny"))
    # larger weights than the initialisation's, so activations reach the rounding boundaries
    tok = jax.tree.map(lambda x: 3 * x if jnp.issubdtype(x.dtype, jnp.floating) else x,
                       VQModel(c.tokenizer, rngs=nnx.Rngs(0)))
    codes = np.random.default_rng(0).integers(0, 512, (32, 16)).astype(np.int32)
    at_once = jax.jit(lambda t, x: images_lib.to_uint8(t.decode_code(x.reshape(-1, 4, 4))))

    def run(devices, fn, rows=32, start=0):
      m = c.mesh.copy_and_resolve_references()
      m.data = devices
      mesh = mesh_lib.make_mesh(m, jax.devices()[:devices])
      rules = rules_lib.make_rules()
      with jax.set_mesh(mesh), rules_lib.axis_rules(rules):
        t = jax.device_put(tok, rules_lib.param_shardings(tok, mesh, rules))
        x = mesh_lib.global_batch({"c": codes[start:start + rows]}, mesh)["c"]
        return np.asarray(fn(t, x)).astype(int)

    each = images_lib.tokens_to_images
    one = run(1, each)
    out = {"at_once": int((run(1, at_once) != run(8, at_once)).sum()),
           "one_vs_two": int(np.abs(one - run(2, each)).max()),
           "one_vs_eight": int(np.abs(one - run(8, each)).max()),
           "batch_16_vs_32": int(np.abs(run(1, each, 16) - one[:16]).max()),
           "eight_16_vs_32": int(np.abs(run(8, each, 16) - one[:16]).max()),
           # 13 rows from the 4th: each image at another place in its group, a padded group
           "shifted_13": int(np.abs(run(1, each, 13, 3) - one[3:16]).max())}
    print("RESULT", json.dumps(out))
""")


def test_images_do_not_depend_on_the_placement():
  r = run_worker(WORKER, timeout=600)
  assert r["at_once"] > 0  # the whole-batch decode differs: these codes reach the boundaries
  assert r == dict(r, one_vs_two=0, one_vs_eight=0, batch_16_vs_32=0, eight_16_vs_32=0,
                  shifted_13=0), r
