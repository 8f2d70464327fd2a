"""How a process joins a multi-process job (environment -> jax.distributed settings) and how it
tells a lost peer (`parallel.peers.PeerWatch`), without starting any process."""
import pytest

from maskgil_jax.configlib import ConfigError
from maskgil_jax.parallel import mesh as mesh_lib
from maskgil_jax.parallel import peers


@pytest.fixture
def clean_env(monkeypatch):
  for k in (*mesh_lib.MANUAL_ENV, mesh_lib.MODE_ENV, "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
            "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES", "MEGASCALE_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(k, raising=False)
  return monkeypatch


def test_manual_settings_from_the_environment(clean_env):
  assert mesh_lib.manual_settings() == {}
  clean_env.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  assert mesh_lib.manual_settings() == {}  # JAX's cluster detection supplies the rest
  clean_env.setenv("JAX_NUM_PROCESSES", "4")
  clean_env.setenv("JAX_PROCESS_ID", "3")
  assert mesh_lib.manual_settings() == {"coordinator_address": "10.0.0.1:1234",
                                        "num_processes": 4, "process_id": 3}
  assert mesh_lib.launched_on_several_processes()
  clean_env.setenv("JAX_PROCESS_ID", "4")
  with pytest.raises(ConfigError, match="JAX_PROCESS_ID=4 is not in 0..3"):
    mesh_lib.manual_settings()
  clean_env.setenv("JAX_PROCESS_ID", "x")
  with pytest.raises(ConfigError, match="must be integers"):
    mesh_lib.manual_settings()
  clean_env.delenv("JAX_COORDINATOR_ADDRESS")
  with pytest.raises(ConfigError, match="JAX_COORDINATOR_ADDRESS not set"):
    mesh_lib.manual_settings()


def test_the_environment_decides_what_auto_means(clean_env):
  clean_env.setenv("SLURM_NTASKS", "2")
  clean_env.setenv(mesh_lib.MODE_ENV, "no")  # a launcher that knows better
  assert mesh_lib.initialize_distributed("auto") is False
  clean_env.setenv(mesh_lib.MODE_ENV, "maybe")
  with pytest.raises(ConfigError, match="MASKGIL_JAX_DISTRIBUTED='maybe'"):
    mesh_lib.initialize_distributed("auto")
  assert mesh_lib.initialize_distributed("no") is False  # an explicit setting wins


class FakeStore:
  """The coordination service's key-value calls the watch makes."""

  def __init__(self):
    self.values = {}

  def key_value_set(self, key, value, allow_overwrite=False):
    assert allow_overwrite
    self.values[key] = value

  def key_value_dir_get(self, prefix):
    return [(k, v) for k, v in self.values.items() if k.startswith(prefix)]


def test_a_peer_whose_counter_stands_still_is_lost_and_a_finished_one_is_not():
  store = FakeStore()
  watches = [peers.PeerWatch(store, i, 3, heartbeat_s=10) for i in range(3)]
  assert watches[0].limit == 6 and watches[0].period <= 2
  t0 = watches[0].started
  for w in watches:
    w.tick()
  watches[0].read(t0 + 1)
  assert watches[0].lost(t0 + 5) == []
  watches[1].tick()  # process 1 keeps going, process 2 went silent at t0
  watches[0].read(t0 + 6)
  assert [(p, round(s)) for p, _, s in watches[0].lost(t0 + 8)] == [(2, 7)]
  watches[2].finish()  # a normal exit is never a loss
  watches[0].read(t0 + 9)
  assert watches[0].lost(t0 + 9.5) == []
  never = peers.PeerWatch(FakeStore(), 0, 2, heartbeat_s=10)  # a peer that never started
  assert [p for p, _, _ in never.lost(never.started + 7)] == [1]
