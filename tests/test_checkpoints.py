"""Orbax checkpoints: parameters on their own, the trainer's state, fall-back on damage."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maskgil_jax import checkpoints, configlib
from maskgil_jax.interop.torch_io import CheckpointError
from maskgil_jax.models.transformer import Transformer


@pytest.fixture(scope="module")
def tiny():
  config = configlib.finalize(configlib.load_config("tiny"))
  model = Transformer(config.model, rngs=nnx.Rngs(0))
  abstract = nnx.eval_shape(lambda: Transformer(config.model, rngs=nnx.Rngs(1)))
  return config, model, abstract


def same_params(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_params_restores_from_workdir_root_or_step(tmp_path, tiny):
  config, model, abstract = tiny
  step_dir = checkpoints.save_params(tmp_path / "run", model, config, step=7)
  assert step_dir == tmp_path / "run" / "checkpoints" / "7"
  for where in (tmp_path / "run", tmp_path / "run" / "checkpoints", step_dir):
    same_params(checkpoints.restore_params(where, abstract), model)
  assert checkpoints.latest_step(tmp_path / "run") == 7
  assert checkpoints.latest_step(tmp_path / "nothing") is None
  restored = checkpoints.restore_config(tmp_path / "run")
  assert restored.model.to_dict() == config.model.to_dict()
  assert restored.tokenizer.ch_mult == config.tokenizer.ch_mult  # tuples stay tuples


def test_restore_casts_to_the_target_dtype_and_nested_names(tmp_path, tiny):
  config, model, abstract = tiny
  checkpoints.save_params(tmp_path, model, config)
  bf16 = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, jnp.bfloat16), abstract)
  restored = checkpoints.restore_params(tmp_path, bf16)
  assert restored.layers.attention.wqkv.weight[...].dtype == jnp.bfloat16
  nested = checkpoints.to_nested({"params": model})
  assert nested["params"]["layers"]["attention"]["wqkv"]["weight"].shape == (2, 64, 192)


def test_save_params_never_overwrites(tmp_path, tiny):
  config, model, _ = tiny
  checkpoints.save_params(tmp_path, model, config, step=3)
  with pytest.raises(CheckpointError, match="already exists"):
    checkpoints.save_params(tmp_path, model, config, step=3)


def test_clear_errors_for_missing_or_empty_or_mismatched(tmp_path, tiny):
  config, model, abstract = tiny
  with pytest.raises(CheckpointError, match="no such directory"):
    checkpoints.restore_params(tmp_path / "missing", abstract)
  (tmp_path / "empty").mkdir()
  with pytest.raises(CheckpointError, match="holds no checkpoint"):
    checkpoints.restore_params(tmp_path / "empty", abstract)
  checkpoints.save_params(tmp_path / "run", model, config)
  with pytest.raises(CheckpointError, match="no EMA parameters"):
    checkpoints.restore_params(tmp_path / "run", abstract, ema=True)
  other = configlib.finalize(configlib.load_config("tiny:llamagen"))
  wrong = nnx.eval_shape(lambda: Transformer(other.model, rngs=nnx.Rngs(0)))
  with pytest.raises(CheckpointError, match="does not fit.*mis-shaped params.tok_embeddings"):
    checkpoints.restore_params(tmp_path / "run", wrong)


def test_damaged_latest_falls_back_to_the_previous_one(tmp_path, tiny, caplog):
  config, model, _ = tiny
  manager = checkpoints.make_manager(tmp_path, every_steps=1)
  states = {s: {"step": jnp.int32(s), "params": jax.tree.map(lambda x: x + s, model)}
            for s in (1, 2)}
  for s, state in states.items():
    checkpoints.save(manager, s, state, config)
  manager.wait_until_finished()
  for f in (tmp_path / "2" / "state").rglob("*"):
    if f.is_file() and "manifest" in f.name:
      f.write_bytes(b"damaged")
  abstract = jax.eval_shape(lambda: states[1])
  with caplog.at_level(logging.WARNING):
    state, step = checkpoints.restore_state(manager, abstract, quarantine=True)
  assert step == 1 and "cannot be read" in caplog.text
  same_params(state["params"], states[1]["params"])
  assert manager.all_steps() == [1]  # step 2 moved aside, so it can be written again
  assert [p.name.split(".")[0] for p in tmp_path.glob("2.unreadable-*")] == ["2"]
  checkpoints.save(manager, 2, states[2], config)
  manager.wait_until_finished()
  assert checkpoints.restore_state(manager, abstract)[1] == 2
  manager.close()


def test_half_written_latest_is_not_used(tmp_path, tiny, caplog):
  """A save cut short leaves a temporary folder, or a step folder without its metadata."""
  config, model, _ = tiny
  manager = checkpoints.make_manager(tmp_path, every_steps=1)
  state = {"step": jnp.int32(1), "params": model}
  checkpoints.save(manager, 1, state, config)
  manager.wait_until_finished()
  manager.close()
  (tmp_path / "2.orbax-checkpoint-tmp-1234" / "state").mkdir(parents=True)
  (tmp_path / "3" / "state").mkdir(parents=True)
  (tmp_path / "3" / "state" / "manifest.ocdbt").write_bytes(b"partial")
  manager = checkpoints.make_manager(tmp_path, every_steps=1)
  with caplog.at_level(logging.WARNING):
    restored, step = checkpoints.restore_state(manager, jax.eval_shape(lambda: state),
                                               quarantine=True)
  assert step == 1
  same_params(restored["params"], model)
  manager.close()


def test_nothing_is_moved_when_no_checkpoint_can_be_read(tmp_path, tiny):
  config, model, _ = tiny
  manager = checkpoints.make_manager(tmp_path, every_steps=1)
  state = {"step": jnp.int32(1), "params": model}
  checkpoints.save(manager, 1, state, config)
  manager.wait_until_finished()
  for f in (tmp_path / "1" / "state").rglob("manifest.ocdbt"):
    f.write_bytes(b"damaged")
  with pytest.raises(CheckpointError, match=r"no readable checkpoint:\n  step 1: ValueError"):
    checkpoints.restore_state(manager, jax.eval_shape(lambda: state), quarantine=True)
  assert manager.all_steps() == [1] and (tmp_path / "1").is_dir()
  manager.close()


def test_terminal_shows_our_warnings_but_not_the_library_chatter(tmp_path, tiny, capsys):
  """A restore prints nothing on the terminal (orbax's routine 'read only' warnings are
  dropped); our own warnings, such as a checkpoint fallback, are one plain line."""
  from maskgil_jax import cli
  cli.setup_logging()
  config, model, abstract = tiny
  checkpoints.save_params(tmp_path / "run", model, config, step=1)
  capsys.readouterr()
  same_params(checkpoints.restore_params(tmp_path / "run", abstract), model)
  assert capsys.readouterr().err == ""
  logging.warning("checkpoint %s cannot be read; falling back to the previous one", "x/2")
  assert capsys.readouterr().err == ("warning: checkpoint x/2 cannot be read; falling back to "
                                     "the previous one\n")


LOAD_AS_A_PYTHON_USER = """
import json, logging, sys
seen = []
class Mine(logging.Handler):  # the user's own logging set-up, before the package is imported
  def emit(self, record):
    seen.append(f"{record.levelname}:{record.getMessage()}")
logging.getLogger().addHandler(Mine(level=logging.WARNING))
from absl import logging as absl_logging
from maskgil_jax import pipeline
pipe = pipeline.load(sys.argv[1])
absl_logging.warning("an absl warning of the user")
logging.getLogger("user").warning("a warning of the user")
print("RESULT " + json.dumps(seen))
"""


def test_a_python_user_loading_a_checkpoint_sees_no_routine_library_warnings(tmp_path, tiny):
  """`pipeline.load` of an orbax checkpoint (the library warns 'read only' twice per restore)
  without the command shell's logging: the user's handler gets none of the routine warnings,
  and still every warning of its own, absl's included."""
  from worker import run_worker
  config, model, _ = tiny
  checkpoints.save_params(tmp_path / "run", model, config)
  seen = run_worker(LOAD_AS_A_PYTHON_USER, str(tmp_path / "run"), timeout=300)
  assert seen == ["WARNING:an absl warning of the user", "WARNING:a warning of the user"]
