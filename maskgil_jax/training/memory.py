"""Per-device memory of a compiled train step, from XLA's memory analysis (nothing is run)."""
from __future__ import annotations

import re

from maskgil_jax.errors import UserError

GIB = 1024 ** 3


def memory_summary(compiled) -> dict[str, float]:
  """GiB per device: arguments (state + batch), outputs, temporaries, donated (aliased) bytes,
  generated code and the peak estimate arguments + outputs + temporaries - aliased."""
  m = compiled.memory_analysis()
  if m is None:
    raise RuntimeError("this backend reports no memory analysis for compiled programs")
  sizes = {"arguments": m.argument_size_in_bytes, "outputs": m.output_size_in_bytes,
           "temporaries": m.temp_size_in_bytes, "aliased": m.alias_size_in_bytes,
           "code": m.generated_code_size_in_bytes}
  sizes["total"] = sizes["arguments"] + sizes["outputs"] + sizes["temporaries"] - sizes["aliased"]
  return {k: v / GIB for k, v in sizes.items()}



class DoesNotFit(UserError):
  """The compiled program needs more memory than a device has (the TPU compiler refuses it)."""


# XLA's TPU compiler refuses a program that cannot fit in HBM, at compile time
_OUT_OF_MEMORY = re.compile(r"RESOURCE_EXHAUSTED: Ran out of memory.*?required for ([\w ]+?) "
                            r"\(([\d.]+)([KMGT])\) exceeds available HBM \(([\d.]+)([KMGT])\)",
                            re.S)
_UNITS = {"K": 2 ** -20, "M": 2 ** -10, "G": 1.0, "T": 2.0 ** 10}


def out_of_memory(error: BaseException) -> tuple[str, float, float] | None:
  """(what, GiB needed, GiB available) of the compiler's out-of-memory refusal, else None."""
  m = _OUT_OF_MEMORY.search(str(error))
  if not m:
    return None
  what, need, nu, have, hu = m.groups()
  return what, float(need) * _UNITS[nu], float(have) * _UNITS[hu]


def compile_within_memory(compile_fn, *args, what: str = "the train step"):
  """`compile_fn(*args)`, with the compiler's out-of-memory refusal turned into DoesNotFit
  (one `error:` line saying what to change) instead of a runtime traceback."""
  try:
    return compile_fn(*args)
  except Exception as e:  # jax.errors.JaxRuntimeError; other errors are re-raised as they are
    oom = out_of_memory(e)
    if oom is None:
      raise
    raise DoesNotFit(
        f"{what} does not fit in a device's memory: XLA needs {oom[1]:.2f} GiB for {oom[0]} "
        f"alone, the device has {oom[2]:.2f} GiB; shard more (config.mesh.fsdp), recompute "
        f"more (config.model.remat_policy) or lower config.batch_size") from None
