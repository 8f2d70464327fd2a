"""remat_policy 'auto': the least recomputation whose compiled step fits, compiled in order and
no further than needed; the trainer reports the choice and explicit policies stay as given."""
import types

import jax
import pytest

from maskgil_jax.models import remat
from maskgil_jax.training import memory, remat_choice

GIB = memory.GIB


def fake_compiled(total_gib):
  """An object with the memory analysis of a compiled step needing `total_gib`."""
  analysis = types.SimpleNamespace(
      argument_size_in_bytes=int(total_gib * GIB), output_size_in_bytes=0,
      temp_size_in_bytes=0, alias_size_in_bytes=0, generated_code_size_in_bytes=0)
  return types.SimpleNamespace(memory_analysis=lambda: analysis)


# least recomputation needs the most memory
NEEDS = {"none": 8.0, "dots_saveable": 6.0, "dots_with_no_batch_dims_saveable": 5.0,
         "nothing_saveable": 2.0}


def compile_recorder():
  calls = []
  def compile_with(policy):
    calls.append(policy)
    return fake_compiled(NEEDS[policy])
  return compile_with, calls


@pytest.mark.parametrize("device_gib, policy", [
    (100.0, "none"), (7.0, "dots_saveable"), (5.9, "dots_with_no_batch_dims_saveable"),
    (3.0, "nothing_saveable")])
def test_picks_the_least_recomputation_that_fits_and_compiles_no_further(device_gib, policy):
  compile_with, calls = compile_recorder()
  choice = remat_choice.choose(compile_with, int(device_gib * GIB))
  assert choice.policy == policy
  assert calls == list(remat_choice.AUTO_ORDER[:calls.index(policy) + 1])
  assert choice.need_gib == pytest.approx(NEEDS[policy])
  assert choice.need_gib <= choice.have_gib
  assert "fits" in remat_choice.describe(choice) and policy in remat_choice.describe(choice)


def test_nothing_fits_takes_the_least_memory_and_says_so():
  compile_with, calls = compile_recorder()
  choice = remat_choice.choose(compile_with, int(1.0 * GIB))
  assert choice.policy == "nothing_saveable" and calls == list(remat_choice.AUTO_ORDER)
  assert "NOT fit" in remat_choice.describe(choice)


def test_policies_are_real_and_auto_falls_back_outside_the_trainer():
  assert set(remat_choice.AUTO_ORDER) <= set(remat.POLICIES) | {"none"}
  f = lambda x: x * 2.0
  assert remat.remat(f, "none") is f
  assert remat.remat(f, "auto") is not f  # checkpointed like AUTO_FALLBACK
  assert float(remat.remat(f, "auto")(3.0)) == 6.0


def test_host_memory_is_known():
  assert remat_choice.device_memory_bytes(jax.devices("cpu")[0]) > 0
