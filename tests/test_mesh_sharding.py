"""Meshes and shardings: mesh sizes from config, one sharded step equals one unsharded step,
checkpoints restore onto a different mesh, and FSDP shards (nearly) every parameter byte.

The 8-device checks run in a subprocess: XLA_FLAGS must be set before JAX starts.
"""
import textwrap

import jax
import numpy as np
import pytest
from flax import nnx

from maskgil_jax import configlib
from maskgil_jax.configlib import ConfigError
from maskgil_jax.models.transformer import Transformer
from maskgil_jax.parallel import mesh as mesh_lib
from maskgil_jax.parallel import rules as rules_lib
from worker import run_worker

EIGHT_DEVICES = textwrap.dedent("""
    import os, json, sys
    os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=8 "
                               "--xla_backend_optimization_level=0 "  # compiles 2x faster
                               "--xla_llvm_disable_expensive_passes=true")
    import jax, numpy as np
    from flax import nnx
    from maskgil_jax import checkpoints, configlib
    from maskgil_jax.models.transformer import Transformer
    from maskgil_jax.parallel import mesh as mesh_lib, rules as rules_lib
    from maskgil_jax.training import objectives, optim, state as state_lib, steps

    # eps 1e-3: Adam's first update g / (|g| + eps) then moves by at most lr * dg / eps for a
    # gradient rounding difference dg, instead of up to 2 * lr where |g| ~ 1e-8 (float32
    # reductions in another order are a legitimate difference; a sharding bug is not)
    c = configlib.finalize(configlib.load_config("tiny", {
        "batch_size": 8, "optim.lr": 1e-3, "optim.eps": 1e-3, "optim.ema_decay": 0.5}))
    tx = optim.make_optimizer(c.optim, c.total_steps)
    step_fn = steps.make_generator_step(
        lambda m, b, k: objectives.mar_loss(m, b, k, c.objective), tx,
        optim.learning_rate(c.optim, c.total_steps), ema_decay=c.optim.ema_decay)
    init = lambda: state_lib.init_train_state(Transformer(c.model, rngs=nnx.Rngs(0)), tx, ema=True)
    rng = np.random.default_rng(0)
    batch = {"codes": rng.integers(0, 512, (8, 4, 4)).astype(np.int32),
             "label": rng.integers(0, 10, (8,)).astype(np.int32)}

    def mesh_of(shape, devices):
      m = c.mesh.copy_and_resolve_references()
      m.data, m.fsdp, m.tensor = shape
      return mesh_lib.make_mesh(m, devices)

    def one_step(mesh):
      rules = rules_lib.make_rules()
      with jax.set_mesh(mesh), rules_lib.axis_rules(rules):
        abstract, sh = state_lib.abstract_sharded(init, mesh, rules)
        repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        f = jax.jit(step_fn, in_shardings=(sh, mesh_lib.batch_sharding(mesh), repl),
                    out_shardings=(sh, repl), donate_argnums=0)
        state, metrics = f(state_lib.create_sharded(init, sh),
                           mesh_lib.global_batch(batch, mesh), jax.random.key(0))
      return state, metrics, abstract

    one, m1, _ = one_step(mesh_of((1, 1, 1), jax.devices()[:1]))
    eight, m8, _ = one_step(mesh_of((2, 2, 2), jax.devices()))
    pairs = list(zip(jax.tree.leaves(jax.device_get(one)), jax.tree.leaves(jax.device_get(eight))))
    wqkv = eight.params.layers.attention.wqkv.weight[...]
    out = {"loss": [float(m1["loss"]), float(m8["loss"])],
           "param_diff": max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in pairs),
           "moved": float(np.abs(np.asarray(one.params.output.weight[...])).max()),
           "wqkv_spec": list(wqkv.sharding.spec), "wqkv_shard": list(wqkv.addressable_shards[0].data.shape)}

    # restore the 8-device state onto 4 devices with another layout
    manager = checkpoints.make_manager(sys.argv[1])
    checkpoints.save(manager, 1, eight, c, force=True)
    manager.wait_until_finished()
    four = mesh_of((1, 4, 1), jax.devices()[:4])
    abstract4, _ = state_lib.abstract_sharded(init, four, rules_lib.make_rules())
    restored, step = checkpoints.restore_state(manager, abstract4)
    out["restored_step"] = step
    out["restore_diff"] = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in
                              zip(jax.tree.leaves(jax.device_get(restored)),
                                  jax.tree.leaves(jax.device_get(eight))))
    out["restored_devices"] = len(restored.params.layers.attention.wqkv.weight[...].sharding.device_set)
    print("RESULT", json.dumps(out))
""")


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
  ckpt = tmp_path_factory.mktemp("mesh_ckpt")
  return run_worker(EIGHT_DEVICES, str(ckpt), timeout=300)


def test_sharded_step_equals_single_device_step(eight_devices):
  r = eight_devices
  assert r["wqkv_spec"] == [None, "fsdp", "tensor"]
  assert r["wqkv_shard"] == [2, 32, 96]  # [layers, embed / fsdp, qkv / tensor]
  np.testing.assert_allclose(r["loss"][0], r["loss"][1], rtol=1e-6)
  assert r["moved"] > 1e-4  # the step did update the (zero-initialised) output layer
  assert r["param_diff"] < 1e-6  # parameters, Adam moments and EMA after the update


def test_restore_onto_a_different_mesh(eight_devices):
  assert eight_devices["restored_step"] == 1
  assert eight_devices["restored_devices"] == 4
  assert eight_devices["restore_diff"] == 0.0


def mesh_cfg(**sizes):
  m = configlib.base_config("tiny").mesh
  m.update(sizes)
  return m


def test_mesh_sizes_fill_and_errors():
  assert mesh_lib.mesh_shape(mesh_cfg(), 8) == (8, 1, 1)
  assert mesh_lib.mesh_shape(mesh_cfg(data=2, fsdp=-1, tensor=2), 16) == (2, 4, 2)
  assert mesh_lib.slice_shapes(mesh_cfg(data=-1, fsdp=4, slices=2), 32) == ((4, 4, 1), (2, 1, 1))
  with pytest.raises(ConfigError, match="config.mesh.fsdp=-1: 6 devices"):
    mesh_lib.mesh_shape(mesh_cfg(data=4, fsdp=-1), 6)
  with pytest.raises(ConfigError, match="only one axis may be -1"):
    mesh_lib.mesh_shape(mesh_cfg(data=-1, fsdp=-1), 8)
  with pytest.raises(ConfigError, match="= 4 but there are 8 devices"):
    mesh_lib.mesh_shape(mesh_cfg(data=4, fsdp=1), 8)
  with pytest.raises(ConfigError, match="config.mesh.slices"):
    mesh_lib.slice_shapes(mesh_cfg(data=3, slices=2), 3)
  with pytest.raises(ConfigError, match="config.mesh.distributed"):
    mesh_lib.initialize_distributed("maybe")


def test_multi_process_environments_are_detected(monkeypatch):
  for name in ("JAX_COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES",
               "TPU_PROCESS_ADDRESSES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    monkeypatch.delenv(name, raising=False)
  assert not mesh_lib.launched_on_several_processes()
  monkeypatch.setenv("SLURM_NTASKS", "1")
  assert not mesh_lib.launched_on_several_processes()
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t1k-w-0,t1k-w-1")
  assert mesh_lib.launched_on_several_processes()


def test_fsdp_shards_the_1b_model(tmp_path):
  """configs/maskgil_1b.py under its pure-FSDP mesh, abstract shapes only."""
  config = configlib.finalize(configlib.load_config("configs/maskgil_1b.py"))
  assert (config.mesh.data, config.mesh.fsdp, config.mesh.tensor) == (1, -1, 1)
  abstract = nnx.eval_shape(lambda: Transformer(config.model, rngs=nnx.Rngs(0)))
  mesh = jax.sharding.AbstractMesh((1, 64, 1), rules_lib.MESH_AXES)
  specs = rules_lib.param_specs(abstract, rules_lib.make_rules(config.mesh.rules.to_dict()), mesh)
  total = sharded = 0
  for a, spec in zip(jax.tree.leaves(abstract), jax.tree.leaves(
      specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))):
    nbytes = int(np.prod(a.shape)) * a.dtype.itemsize
    total += nbytes
    sharded += nbytes if any(s is not None for s in spec) else 0
  assert total > 5e9  # ~1.4B fp32 parameters
  assert sharded / total >= 0.98, sharded / total


def test_a_process_refuses_to_start_without_its_devices(monkeypatch, capsys):
  """The start-up line names the devices and what the launcher gave; a mismatch stops the run."""
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
  monkeypatch.setenv("SLURM_LOCALID", "3")
  n = jax.local_device_count()
  line = mesh_lib.check_local_devices(n)
  assert f"{n} devices [cpu:0" in line and "CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7" in line
  assert "local rank 3" in line and line in capsys.readouterr().out
  with pytest.raises(ConfigError, match=f"config.mesh.local_devices: expected {n + 1} devices"):
    mesh_lib.check_local_devices(n + 1)
  assert mesh_lib.initialize_distributed("no", local_devices=n) is False  # checks, no init
