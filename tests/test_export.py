"""`maskgil_jax.export`: round trips bit for bit in both directions, files that load strictly into
the reference architecture and match the JAX model, any checkpoint (scanned or not, bf16, EMA,
sharded) restored on the CPU, and refusals that write nothing."""
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import torch
from flax import nnx

from maskgil_jax.errors import UserError
from maskgil_jax import checkpoints, configlib, convert, export
from maskgil_jax.configlib import ConfigError
from maskgil_jax.interop import gpt_names, names, torch_io
from maskgil_jax.interop import torch_model as tm
from maskgil_jax.interop.torch_io import CheckpointError
from maskgil_jax.models import vq as jax_vq
from maskgil_jax.models.vq import VQModel
from test_export_support import (FIXTURE_KINDS, assert_same_state_dict, config_for_fixture,
                                 random_tokenizer, random_transformer, save_run, tiny_config,
                                 tokenizer_run_config)

REPO = pathlib.Path(__file__).resolve().parents[1]


def same_params(a, b):
  pa, pb = names.named_arrays(a), names.named_arrays(b)
  assert set(pa) == set(pb)
  for k in pa:
    assert pa[k].dtype == pb[k].dtype, k
    np.testing.assert_array_equal(np.asarray(pa[k]), np.asarray(pb[k]), err_msg=k)


# ---- round trips ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def converted(fixtures_dir, tmp_path_factory):
  """Each reference fixture converted once: {stem: orbax directory}."""
  tmp = tmp_path_factory.mktemp("converted")
  out = {}
  for stem, (kind, _, _) in FIXTURE_KINDS.items():
    out[stem] = tmp / stem
    convert.convert(kind, fixtures_dir / f"{stem}.pt", config_for_fixture(stem), out[stem])
  return out


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("stem", sorted(FIXTURE_KINDS))
def test_convert_then_export_reproduces_each_fixture_bit_for_bit(fixtures_dir, converted,
                                                                 tmp_path, stem, suffix):
  layout = FIXTURE_KINDS[stem][2]
  out = tmp_path / f"back{suffix}"
  export.export(converted[stem], layout, out)
  original = torch_io.load_state_dict(fixtures_dir / f"{stem}{suffix}")
  # the key order of a .pt is PyTorch's registration order (safetensors sorts its keys); the
  # VQ table lists the usage buffer after the codebook, LlamaGen registers it before
  ordered = suffix == ".pt" and "gpt" in stem
  assert_same_state_dict(original, torch_io.load_state_dict(out), ordered=ordered)
  if suffix == ".pt":  # the entry the reference loaders read
    entry = "model_state_dict" if layout == "maskgil-reference" else "model"
    assert entry in torch.load(out, weights_only=True)
  if stem == "llamagen_vq_tiny" and suffix == ".pt":  # MaskGIL loads LlamaGen's VQ file as is
    maskgil_vq = tmp_path / "maskgil_vq.pt"
    export.export(converted[stem], "maskgil-reference", maskgil_vq)
    assert "model" in torch.load(maskgil_vq, weights_only=True)
    assert_same_state_dict(torch_io.load_state_dict(out), torch_io.load_state_dict(maskgil_vq))


EXPORT_CASES = {  # name: (config spec, overrides, export layout)
    "llamagen": ("tiny:llamagen", None, "llamagen"),
    "maskgil_reference": ("tiny:maskgil_reference", None, "maskgil-reference"),
    "maskgil_native": ("tiny:maskgil", {"model.n_kv_head": 2}, "native"),
}


@pytest.mark.parametrize("case", sorted(EXPORT_CASES))
def test_export_then_convert_reproduces_our_parameters_and_torch_matches_jax(tmp_path, case):
  spec, overrides, layout = EXPORT_CASES[case]
  config = tiny_config(spec, overrides)
  model = random_transformer(config, seed=3)
  out = tmp_path / "model.pt"
  export.export(save_run(tmp_path / "run", model, config), layout, out)

  kind = {"llamagen": "llamagen-c2i", "maskgil-reference": "maskgil-reference"}.get(layout,
                                                                                    "native")
  state_dict, metadata = torch_io.load_weights(out)
  back, _ = convert.import_weights(kind, state_dict, metadata, config, str(out))
  same_params(back, model)

  torch_model = tm.load_transformer(out)  # strict=True, with exactly the reference keys
  tokens = np.random.default_rng(0).integers(0, 512, (2, 16))
  labels = np.array([2, 10])
  expected = jax.jit(lambda m, t, l: m(t, l, mode="bidirectional"))(
      model, jnp.asarray(tokens), jnp.asarray(labels))
  with torch.no_grad():
    actual = torch_model(torch.tensor(tokens), torch.tensor(labels))
  np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=0)
  assert np.abs(np.asarray(expected)).max() > 0.1


@pytest.mark.parametrize("layout", ["llamagen", "native"])
def test_tokenizer_export_then_convert_and_torch_reconstructions(tmp_path, layout):
  config = tiny_config("tiny")
  model = random_tokenizer(config, seed=4)
  usage = np.arange(65536, dtype=np.float32) % 512
  model.quantize.codebook_used.set_value(jnp.asarray(usage))  # the buffer travels too
  out = tmp_path / "vq.safetensors"
  export.export(save_run(tmp_path / "run", model, tokenizer_run_config(config)), layout, out)
  convert.convert("vq16" if layout == "llamagen" else "native", out, config, tmp_path / "back")
  abstract = nnx.eval_shape(lambda: VQModel(config.tokenizer, rngs=nnx.Rngs(0)))
  back = checkpoints.restore_params(tmp_path / "back", abstract)
  same_params(back, model)
  np.testing.assert_array_equal(np.asarray(back.quantize.codebook_used[...]), usage)
  if layout == "native":
    return  # test_torch_model compares native tokenizer exports with JAX

  vq = tm.load_tokenizer(out)  # LlamaGen's keys, strictly
  images = np.random.default_rng(1).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
  codes, expected = jax_vq.reconstruct(model, jnp.asarray(images))
  torch_codes = vq.encode(torch.tensor(images).permute(0, 3, 1, 2))
  np.testing.assert_array_equal(torch_codes, codes)
  np.testing.assert_allclose(vq.decode_code(torch_codes).permute(0, 2, 3, 1), expected,
                             atol=1e-4, rtol=0)


# ---- what any checkpoint holds ------------------------------------------------------------------
def test_scanned_and_unscanned_checkpoints_export_the_same(tmp_path):
  files = []
  for scan in (True, False):
    config = tiny_config("tiny:maskgil", {"model.scan_layers": scan})
    run = save_run(tmp_path / f"scan_{scan}", random_transformer(config, seed=5), config)
    files.append(tmp_path / f"scan_{scan}.pt")
    export.export(run, "native", files[-1])
  assert_same_state_dict(*(torch_io.load_state_dict(f) for f in files))
  assert tm.load_transformer(files[1]).config == tm.load_transformer(files[0]).config


def test_bf16_checkpoint_exports_fp32_by_default_or_bf16(tmp_path):
  config = tiny_config("tiny:llamagen")
  model = random_transformer(config, seed=6)
  bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), model)
  run = save_run(tmp_path / "run", bf16, config)
  expected = names.export_state_dict(bf16, gpt_names.gpt_rules(config.model))  # upcast
  export.export(run, "llamagen", tmp_path / "fp32.pt")
  assert_same_state_dict(expected, torch_io.load_state_dict(tmp_path / "fp32.pt"))
  for suffix in (".pt", ".safetensors"):
    out = tmp_path / f"bf16{suffix}"
    export.export(run, "llamagen", out, dtype="bfloat16")
    raw = (torch.load(out, weights_only=True)["model"] if suffix == ".pt"
           else safetensors.torch.load_file(out))
    assert {t.dtype for t in raw.values()} == {torch.bfloat16}
    # bf16 values, read back as fp32 (safetensors stores its keys unordered)
    assert_same_state_dict(expected, torch_io.load_state_dict(out), ordered=suffix == ".pt")
    tm.load_transformer(out)


def test_ema_parameters_by_choice(tmp_path):
  config = tiny_config("tiny:llamagen")
  params, ema = random_transformer(config, seed=7), random_transformer(config, seed=8)
  manager = checkpoints.make_manager(tmp_path / "run" / checkpoints.SUBDIR)
  checkpoints.save(manager, 10, {"params": params, "ema_params": ema}, config, force=True)
  manager.wait_until_finished()
  manager.close()
  rules = gpt_names.gpt_rules(config.model)
  for flag, module in ((False, params), (True, ema)):
    out = tmp_path / f"ema_{flag}.safetensors"
    export.export(tmp_path / "run", "llamagen", out, ema=flag, step=10)
    assert_same_state_dict(names.export_state_dict(module, rules), torch_io.load_state_dict(out),
                           ordered=False)
  save_run(tmp_path / "plain", params, config)
  with pytest.raises(CheckpointError, match="no EMA parameters"):
    export.export(tmp_path / "plain", "llamagen", tmp_path / "none.pt", ema=True)
  assert not (tmp_path / "none.pt").exists()


_SAVE_SHARDED = """
import sys
import jax
sys.path.insert(0, {tests!r})
from maskgil_jax import checkpoints
from maskgil_jax.parallel import mesh as mesh_lib, rules
from test_export_support import random_transformer, tiny_config
config = tiny_config("tiny:llamagen", {{"mesh.data": 1, "mesh.fsdp": 2}})
mesh = mesh_lib.make_mesh(config.mesh)
model = random_transformer(config, seed=9)
sharded = jax.device_put(model, rules.param_shardings(model, mesh, rules.DEFAULT_RULES))
assert len(sharded.tok_embeddings.weight[...].sharding.device_set) == 2
checkpoints.save_params({run!r}, sharded, config)
"""


def test_checkpoint_sharded_over_devices_exports_on_one_cpu(tmp_path):
  run = tmp_path / "run"
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
         "JAX_PLATFORMS": "cpu"}
  script = _SAVE_SHARDED.format(tests=str(REPO / "tests"), run=str(run))
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  export.export(run, "llamagen", tmp_path / "out.pt")
  config = tiny_config("tiny:llamagen")
  expected = names.export_state_dict(random_transformer(config, seed=9),
                                     gpt_names.gpt_rules(config.model))
  assert_same_state_dict(expected, torch_io.load_state_dict(tmp_path / "out.pt"))


# ---- refusals -------------------------------------------------------------------------------
def test_refusals_write_nothing(tmp_path):
  config = tiny_config("tiny:maskgil")  # QK-norm, post-norm: no reference counterpart
  run = save_run(tmp_path / "run", random_transformer(config), config)
  with pytest.raises(ConfigError, match="config.model.layout: 'maskgil'"):
    export.export(run, "llamagen", tmp_path / "a.pt")
  with pytest.raises(UserError, match="does not match"):
    export.export(run, "native", tmp_path / "a.pt", fmt="safetensors")
  with pytest.raises(UserError, match=".pt, .pth, .ckpt or .safetensors"):
    export.export(run, "native", tmp_path / "a.bin")
  with pytest.raises(CheckpointError, match="holds no checkpoint"):
    export.export(tmp_path, "native", tmp_path / "a.pt")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
  (tmp_path / "kept.pt").write_bytes(b"mine")
  with pytest.raises(UserError, match="exists"):
    export.export(run, "native", tmp_path / "kept.pt")
  assert (tmp_path / "kept.pt").read_bytes() == b"mine"


def test_missing_out_folders_are_made_once_the_export_is_ready(tmp_path):
  """As `convert` does; a refusal still leaves nothing behind, not even the folders."""
  config = tiny_config("tiny:llamagen")
  run = save_run(tmp_path / "run", random_transformer(config, seed=3), config)
  with pytest.raises(ConfigError):
    export.export(run, "taming", tmp_path / "refused" / "a.pt")
  assert not (tmp_path / "refused").exists()
  out = tmp_path / "new" / "deeper" / "gpt.safetensors"
  export.export(run, "llamagen", out)
  assert set(torch_io.load_state_dict(out)) == set(
      names.export_state_dict(random_transformer(config, seed=3),
                              gpt_names.gpt_rules(config.model)))


def test_lookup_free_tokenizer_exports_native_only(tmp_path):
  config = tiny_config("tiny")
  config.tokenizer = configlib.tokenizer_config("tiny_lfq")
  run = save_run(tmp_path / "run", random_tokenizer(config), tokenizer_run_config(config))
  with pytest.raises(ConfigError, match="config.tokenizer.kind: 'lfq'"):
    export.export(run, "llamagen", tmp_path / "a.pt")
  export.export(run, "native", tmp_path / "lfq.pt")
  vq = tm.load_tokenizer(tmp_path / "lfq.pt")
  assert set(vq.state_dict()) == set(torch_io.load_state_dict(tmp_path / "lfq.pt"))


def test_command_line(fixtures_dir, converted, tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "maskgil_jax.export", "--workdir",
       str(converted["maskgil_gpt_tiny"]), "--layout", "maskgil-reference", "--format", "pt",
       "--out", str(tmp_path / "maskgil.pt")], capture_output=True, text=True, cwd=REPO,
      timeout=300)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().splitlines()[-1] == (
      f"exported transformer (17 tensors, 197,760 parameters, float32) in the maskgil-reference "
      f"layout to {tmp_path / 'maskgil.pt'}")
  assert_same_state_dict(torch_io.load_state_dict(fixtures_dir / "maskgil_gpt_tiny.pt"),
                         torch_io.load_state_dict(tmp_path / "maskgil.pt"))
