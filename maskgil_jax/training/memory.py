"""Per-device memory of a compiled train step, from XLA's memory analysis (nothing is run)."""
from __future__ import annotations

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

