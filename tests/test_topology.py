"""TPU slices by name, the compile report's parts, and `--memory-report --topology` end to end.

The end-to-end tests compile the tiny config for TPU slices on this CPU host through the
commands (in subprocesses, as a user runs them): libtpu must be installed (the test extra pins
it); they are skipped without it.
"""
import argparse
import os
import pathlib
import re
import subprocess
import sys

import pytest

from maskgil_jax.parallel import topology
from maskgil_jax.training import compile_report

REPO = pathlib.Path(__file__).resolve().parents[1]


# ---- names --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, chips, shape, libtpu", [
    ("v4-8", 4, (2, 2, 1), "v4:2x2x1"),
    ("v4-32", 16, (2, 2, 4), "v4:2x2x4"),
    ("v5p-64", 32, (2, 4, 4), "v5p:2x4x4"),
    ("v5p-128", 64, (4, 4, 4), "v5p:4x4x4"),
    ("v5p-1024", 512, (8, 8, 8), "v5p:8x8x8"),
    ("v5litepod-1", 1, (1, 1), "v5e:1x1"),
    ("v5litepod-16", 16, (4, 4), "v5e:4x4"),
    ("V5E-8", 8, (2, 4), "v5e:2x4"),  # alias, any case
    ("v6e-256", 256, (16, 16), "v6e:16x16"),
    ("v6e-32", 32, (4, 8), "v6e:4x8"),
])
def test_cloud_tpu_names(name, chips, shape, libtpu):
  t = topology.parse(name)
  assert (t.chips, t.shape, t.libtpu_name, t.total_chips) == (chips, shape, libtpu, chips)


def test_slices_multiply_chips_and_chips_carry_their_figures():
  t = topology.parse("v5litepod-16", num_slices=4)
  assert t.total_chips == 64 and t.chips == 16
  assert t.hbm_bytes == 16 * 2 ** 30 and t.chip.peak_tflops == 197.0
  assert topology.parse("v5p-8").chip.peak_tflops == 459.0
  assert topology.parse("v6e-8").hbm_bytes == 32 * 2 ** 30
  assert topology.for_device_kind("TPU v5 lite").prefix == "v5litepod"
  assert topology.for_device_kind("TPU v5").prefix == "v5p"
  assert topology.for_device_kind("cpu") is None


@pytest.mark.parametrize("name, message", [
    ("v9-8", "unknown TPU slice; known: v4-{8,16"),
    ("v5p", "unknown TPU slice"),
    ("v5p-7", "two per chip"),
    ("v5litepod-2", "no standard v5litepod slice of 2 chips"),
    ("v5litepod-512", "no standard v5litepod slice of 512 chips"),
    ("v6e-12", "no standard v6e slice"),
])
def test_bad_names_list_the_known_ones(name, message):
  with pytest.raises(topology.TopologyError, match=re.escape(message)):
    topology.parse(name)


def test_flag_errors():
  flags = lambda **kw: argparse.Namespace(**{"topology": None, "num_slices": 1,
                                             "memory_report": True, **kw})
  assert topology.from_args(flags()) is None
  with pytest.raises(topology.TopologyError, match="--num-slices needs --topology"):
    topology.from_args(flags(num_slices=2))
  with pytest.raises(topology.TopologyError, match="add --memory-report"):
    topology.from_args(flags(topology="v5p-8", memory_report=False))
  with pytest.raises(topology.TopologyError, match="--num-slices 0"):
    topology.from_args(flags(topology="v5p-8", num_slices=0))


def test_missing_libtpu_names_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "libtpu", None)  # import libtpu -> ImportError
  with pytest.raises(topology.TopologyError, match=re.escape('pip install "maskgil_jax[tpu-'
                                                             'compile]"')):
    topology.check_libtpu()


def test_configure_spreads_the_data_axis_over_slices():
  import ml_collections
  c = ml_collections.ConfigDict({"mesh": {"slices": 1, "data": 2}})
  assert topology.configure(c, None) is c
  assert topology.configure(c, topology.parse("v5p-8", 2)).mesh.slices == 2
  assert c.mesh.slices == 1


# ---- remat 'auto' against a compiler that refuses programs larger than HBM -----------------
REFUSAL = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
           "temporaries ({}G) exceeds available HBM (15.75G).")


def test_auto_remat_skips_policies_the_compiler_refuses(monkeypatch):
  from maskgil_jax.training import memory, remat_choice
  monkeypatch.setattr(memory, "memory_summary", lambda compiled: {"total": compiled})
  tried = []

  def compile_with(policy):  # 'none' and 'dots_saveable' refused; the others fit
    tried.append(policy)
    if policy in ("none", "dots_saveable"):
      raise RuntimeError(REFUSAL.format("28.69"))
    return 10.0

  choice = remat_choice.choose(compile_with, 16 * memory.GIB)
  assert choice.policy == "dots_with_no_batch_dims_saveable" and choice.need_gib == 10.0
  assert tried == list(remat_choice.AUTO_ORDER[:3])

  def refused(policy):
    raise RuntimeError(REFUSAL.format("20.5"))

  with pytest.raises(memory.DoesNotFit, match=r"\(remat nothing_saveable\) does not fit in a "
                     r"device's memory: XLA needs 20.50 GiB for HLO temporaries alone, the "
                     r"device has 15.75 GiB; shard more \(config.mesh.fsdp\)"):
    remat_choice.choose(refused, 16 * memory.GIB)
  with pytest.raises(ValueError, match="other"):  # anything else is no refusal: raised as is
    remat_choice.choose(lambda p: (_ for _ in ()).throw(ValueError("other")), 16 * memory.GIB)


def test_out_of_memory_reads_units():
  from maskgil_jax.training import memory
  err = RuntimeError(REFUSAL.replace("{}G", "512.00M").replace("(15.75G)", "(1.50T)"))
  assert memory.out_of_memory(err) == ("HLO temporaries", 0.5, 1536.0)
  assert memory.out_of_memory(RuntimeError("INTERNAL: something else")) is None


def test_timed_part_of_a_negative_cost_model_answer():
  # 0.05 ms timed, 12 untimed ops (-1 s each)
  seconds, k = compile_report.timed_part(0.00005 - 12)
  assert k == 12 and seconds == pytest.approx(0.00005)
  seconds, k = compile_report.timed_part(-0.99813)
  assert k == 1 and seconds == pytest.approx(0.00187)


def test_mfu_from_a_lower_bound_is_a_bound_or_nothing():
  base = dict(what="train step", devices=8, device_kind="TPU v5 lite", memory={"total": 1.0},
              hbm_gib=16.0, xla_flops=None, collectives=compile_report.collectives(""),
              peak_tflops=100.0)
  exact = compile_report.Report(**base, model_flops=8e13, seconds=0.2)
  assert exact.mfu == pytest.approx(0.5)
  assert compile_report.Report(**base, model_flops=8e13, seconds=0.2, untimed_ops=3).mfu == (
      pytest.approx(0.5))
  # a timed part shorter than the FLOPs at peak: the untimed ops hold the work, no MFU
  assert compile_report.Report(**base, model_flops=8e13, seconds=0.05, untimed_ops=3).mfu is None


# ---- collectives from HLO text ------------------------------------------------------------
HLO = """HloModule m

%add (a: f32[], b: f32[]) -> f32[] {
  ROOT %s = f32[] add(f32[] %a, f32[] %b)
}

%all-reduce-scatter.1 (input: f32[64,512]) -> f32[16,512] {
  %input = f32[64,512]{1,0} parameter(0)
  %all-reduce.3 = f32[64,512]{1,0} all-reduce(%input), channel_id=7, to_apply=%add
  ROOT %ds = f32[16,512]{1,0} dynamic-slice(%all-reduce.3, %c, %c), dynamic_slice_sizes={16,512}
}

%cond (p: (s32[], bf16[4])) -> pred[] {
  %p = (s32[], bf16[4]) parameter(0)
  %c12 = s32[] constant(12)
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %lt = pred[] compare(%i, %c12), direction=LT
}

%gather_piece (x: bf16[1,256]) -> bf16[4,256] {
  %x = bf16[1,256]{1,0} parameter(0)
  ROOT %all-gather.9 = bf16[4,256]{1,0} all-gather(%x), channel_id=3, dimensions={0}, frontend_attributes={async_collective_name="all-gather-start.2"}
}

%gather_done (x: bf16[1,256]) -> bf16[4,256] {
  %x = bf16[1,256]{1,0} parameter(0)
  ROOT %all-gather.10 = bf16[4,256]{1,0} all-gather(%x), channel_id=3, dimensions={0}, frontend_attributes={async_collective_name="all-gather-start.2"}
}

%body (p: (s32[], bf16[4])) -> (s32[], bf16[4]) {
  %p = (s32[], bf16[4]) parameter(0)
  %f1 = bf16[4,256]{1,0} fusion(%p), kind=kCustom, calls=%gather_piece
  %f2 = bf16[4,256]{1,0} fusion(%p), kind=kCustom, calls=%gather_done
  %cp = bf16[4]{0} collective-permute-start(%p), channel_id=9, source_target_pairs={{0,1}}
  %cpd = bf16[4]{0} collective-permute-done(%cp)
  ROOT %t = (s32[], bf16[4]) tuple(%p, %cpd)
}

ENTRY %main (a: f32[64,512], w: (s32[], bf16[4])) -> f32[16,512] {
  %a = f32[64,512]{1,0} parameter(0)
  %w = (s32[], bf16[4]) parameter(1)
  %loop = (s32[], bf16[4]) while(%w), condition=%cond, body=%body
  %ar = f32[8]{0} all-reduce(%a), channel_id=1, to_apply=%add
  ROOT %rs = f32[16,512]{1,0} fusion(%a), kind=kCustom, calls=%all-reduce-scatter.1
}
"""


def test_collectives_count_loops_pieces_and_tpu_reduce_scatter():
  got = compile_report.collectives(HLO)
  # one async all-gather in two pieces, inside a loop of 12 iterations (condition i < 12)
  assert got["all-gather"] == {"count": 12, "bytes": 12 * 4 * 256 * 2}
  assert got["collective-permute"] == {"count": 12, "bytes": 12 * 4 * 2}  # start, not done
  # the all-reduce of the fused reduce-scatter counts as one, its buffer reduced
  assert got["reduce-scatter"] == {"count": 1, "bytes": 64 * 512 * 4}
  # channel ids are per kind: the all-reduce's channel 1 is not the all-gather's
  assert got["all-reduce"] == {"count": 1, "bytes": 8 * 4}
  assert got["all-to-all"] == {"count": 0, "bytes": 0.0}


def test_known_trip_count_wins_over_the_condition():
  text = HLO.replace("condition=%cond, body=%body",
                     'condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"3"}}')
  assert compile_report.collectives(text)["all-gather"]["count"] == 3


# ---- end to end: the commands compile the tiny model for TPU slices -------------------------
def command(module: str, *args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", f"maskgil_jax.{module}", *args],
                        capture_output=True, text=True, env=env, timeout=300)


def fields(out: str) -> dict:
  """The report's numbers from its printed lines."""
  num = lambda pattern: float(re.search(pattern, out).group(1))
  got = {name: num(rf"\n\s+{name}\s+([\d.]+) GiB") for name in
         ("arguments", "outputs", "temporaries", "total")}
  for kind in compile_report.COLLECTIVES:
    got[kind] = int(num(rf"\n\s+{kind}\s+(\d+)\s"))
  ms = re.search(r"ESTIMATE \(XLA's cost model, not a measurement\): (?:at least )?([\d.e+-]+) "
                 r"ms", out)
  got["ms"] = float(ms.group(1)) if ms else None
  got["flops"] = num(r"FLOPs per chip per call \(XLA, remat included\): ([\d.e+]+)")
  return got


@pytest.mark.parametrize("slices, mesh, target", [
    # one slice with the TPU attention kernel: splash, its 17 slots padded to 128, bf16
    ("1", ("--config.mesh.data=1", "--config.mesh.fsdp=-1", "--config.model.dtype=bfloat16",
           "--config.model.attention_kernel=pallas"), "v5litepod-4 (4 chips, v5e:2x2"),
    ("2", ("--config.mesh.data=2", "--config.mesh.fsdp=-1", "--config.batch_size=8"),
     "2 x v5litepod-4 (8 chips, v5e:2x2 per slice"),
])
def test_train_step_compiles_for_tpu_slices(slices, mesh, target, tmp_path):
  pytest.importorskip("libtpu")
  proc = command("train", "--config", "configs/tiny.py", *mesh, "--workdir",
                 str(tmp_path / "unused"), "--memory-report", "--topology", "v5litepod-4",
                 "--num-slices", slices)
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = proc.stdout
  assert f"compiled for {target}" in out and "of 16.00 GiB HBM" in out
  assert "remat policy none" in out  # 'auto' against the chip's HBM: the tiny step fits
  got = fields(out)
  assert 0 < got["arguments"] <= got["total"] < 16 and got["flops"] > 0
  # FSDP: parameters gathered for the passes, gradients reduce-scattered back to shards
  assert got["all-gather"] > 0 and got["reduce-scatter"] > 0
  assert got["ms"] > 0 and "MFU" in out and "images/s per chip" in out
  if slices == "2":  # the data axis's gradients are also summed across the slices, untimed
    assert got["all-reduce"] > 0 and "op(s) the cost model could not time" in out
    assert "at least" in out and "MFU at most" in out
  assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize("slices, data, target", [
    ("1", "1", "v5litepod-4 (4 chips"), ("2", "2", "2 x v5litepod-4 (8 chips")])
def test_mar_decode_compiles_for_tpu_slices(slices, data, target):
  pytest.importorskip("libtpu")
  proc = command("sample", "--config", "configs/tiny.py", f"--config.mesh.data={data}",
                 "--config.mesh.fsdp=-1", "--decode", "mar", "--steps", "4", "--batch-size", "8",
                 "--memory-report", "--topology", "v5litepod-4", "--num-slices", slices)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f"MAR-4 decode of 8 samples memory per device, compiled for {target}" in proc.stdout
  got = fields(proc.stdout)
  assert 0 < got["total"] < 16 and got["ms"] > 0
  assert got["all-gather"] > 0  # the FSDP-sharded weights are gathered to decode


@pytest.mark.parametrize("module, args, message", [
    ("train", ("--topology", "v9-8"), "error: --topology v9-8: unknown TPU slice; known: v4-{"),
    ("train", ("--topology", "v5litepod-4", "--config.mesh.data=3"),
     "error: config.mesh: data x fsdp x tensor = 3 but there are 4 devices"),
    ("sample", ("--decode", "mar", "--topology", "v5p-8", "--num-slices", "2",
                "--config.mesh.data=1", "--config.mesh.fsdp=-1"),
     "error: config.mesh.slices: 2 must be a positive int dividing the data axis (1)"),
])
def test_command_errors_are_one_line(module, args, message, tmp_path):
  pytest.importorskip("libtpu")
  extra = ("--workdir", str(tmp_path)) if module == "train" else ()
  proc = command(module, "--config", "configs/tiny.py", *extra, "--memory-report", *args)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr[-1000:]
