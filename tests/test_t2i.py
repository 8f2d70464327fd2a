"""Caption conditioning: LlamaGen's text-to-image GPT reproduced (fixture made with its code),
its interop (convert, direct loading, export back), and MAR / AR / hybrid decoding of a tiny
caption model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maskgil_jax import checkpoints, configlib, convert, export
from maskgil_jax.configlib import ConfigError
from maskgil_jax.decode import ar, generate_tokens, hybrid, mar
from maskgil_jax.decode.sampling import DecodeSettings
from maskgil_jax.interop import gpt_names, names, torch_io
from maskgil_jax.interop.torch_io import CheckpointError
from maskgil_jax.models.conditions import Caption
from maskgil_jax.models.transformer import Transformer

FIXTURE = "llamagen_gpt_t2i_tiny.safetensors"


def tiny(name):
  return configlib.finalize(configlib.load_config(f"tiny:{name}"))


@pytest.fixture(scope="module")
def io(fixtures_dir):
  return np.load(fixtures_dir / "llamagen_gpt_t2i_tiny_io.npz")


@pytest.fixture(scope="module")
def model(fixtures_dir):
  config = tiny("llamagen_t2i")
  abstract = nnx.eval_shape(lambda: Transformer(config.model, rngs=nnx.Rngs(0)))
  sd = torch_io.load_state_dict(fixtures_dir / FIXTURE)
  return names.import_state_dict(abstract, sd, gpt_names.gpt_rules(config.model))


def caption_model(seed):
  """A tiny MaskGIL caption model with a random (not zero-initialised) output head."""
  model = Transformer(tiny("maskgil_t2i").model, rngs=nnx.Rngs(seed))
  model.output.weight[...] = 0.5 * jax.random.normal(jax.random.key(seed), (64, 512))
  return model


def caption(io):
  return Caption.create(io["caption_embs"], io["emb_masks"])


def test_teacher_forced_logits_with_the_padding_mask(model, io):
  logits = jax.jit(lambda m, t, c: m.ar_logits(t, c))(model, jnp.asarray(io["codes"]),
                                                      caption(io))
  np.testing.assert_allclose(logits, io["logits"], atol=1e-4, rtol=0)


def test_null_caption_projection(model, io):
  null = Caption.create(np.zeros((1, 120, 32), np.float32), np.ones((1, 120)), [True])
  np.testing.assert_allclose(model.embed_caption(null), io["null_cap_proj"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("s", [1, 3])
def test_greedy_tokens_equal_llamagen_generate(model, io, s):
  settings = DecodeSettings.create(cfg_scale=s - 1.0, temperature=0.0, cfg_schedule="constant")
  tokens = ar.generate_jit(model, caption(io), jax.random.key(0), settings).tokens
  np.testing.assert_array_equal(tokens, io[f"tokens_s{s}"])


def test_padded_caption_slots_are_hidden_in_both_modes(io):
  model = caption_model(1)
  cap = caption(io)
  noisy = cap.replace(features=jnp.where(cap.mask[..., None], cap.features, 5.0))
  tokens = jnp.asarray(io["codes"], jnp.int32)
  for mode in ("bidirectional", "causal"):
    f = jax.jit(lambda m, c: m(tokens, c, mode=mode))
    a, b = f(model, cap), f(model, noisy)
    np.testing.assert_allclose(a[:, 120:], b[:, 120:], atol=1e-5)
    assert not np.allclose(a, f(model, cap.replace(null=jnp.ones(4, bool))), atol=1e-3)


def test_mar_ar_and_hybrid_decode_a_caption_model(io):
  model = caption_model(2)
  cap = caption(io)
  settings = DecodeSettings.create(cfg_scale=2.0, steps=4, ar_tokens=6)
  for method in ("mar", "ar", "hybrid"):
    tokens = np.asarray(generate_tokens(model, cap, jax.random.key(0), settings, method))
    assert tokens.shape == (4, 16) and tokens.min() >= 0 and tokens.max() < 512, method
  done = mar.generate_jit(model, cap, jax.random.key(0), settings)
  assert (done.commit_step >= 0).all()
  with pytest.raises(ValueError, match="conditioned on captions .* given class labels"):
    mar.generate(model, jnp.array([1, 2]), jax.random.key(0), settings)
  class_model = Transformer(tiny("maskgil").model, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="AR model is conditioned on class"):
    hybrid.check_pair(class_model, model)


def test_convert_sample_from_the_file_and_export_back(fixtures_dir, io, tmp_path):
  config = tiny("llamagen_t2i")
  info = convert.convert("llamagen-t2i", fixtures_dir / FIXTURE, config, tmp_path / "ckpt")
  abstract = nnx.eval_shape(lambda: Transformer(config.model, rngs=nnx.Rngs(0)))
  restored = checkpoints.restore_params(tmp_path / "ckpt", abstract)
  logits = jax.jit(lambda m, t, c: m.ar_logits(t, c))(restored, jnp.asarray(io["codes"]),
                                                      caption(io))
  np.testing.assert_allclose(logits, io["logits"], atol=1e-4, rtol=0)
  out = tmp_path / "back.safetensors"
  export.export(tmp_path / "ckpt", "llamagen", out)
  original = torch_io.load_state_dict(fixtures_dir / FIXTURE)
  back = torch_io.load_state_dict(out)
  assert sorted(back) == sorted(original)  # what a strict load_state_dict checks
  for k in original:
    np.testing.assert_array_equal(back[k], original[k], err_msg=k)
  assert info["parameters"] == sum(v.size for v in original.values())
  from maskgil_jax import params
  assert params.report(config.model)[1] == info["parameters"]  # `python -m maskgil_jax.params`


def test_mismatched_kinds_are_refused(fixtures_dir, tmp_path):
  with pytest.raises(CheckpointError, match="holds a llamagen-t2i checkpoint, not llamagen-c2i"):
    convert.convert("llamagen-c2i", fixtures_dir / FIXTURE, tiny("llamagen"), tmp_path / "a")
  with pytest.raises(ConfigError, match="config.model.condition: 'class', but a llamagen-t2i"):
    convert.convert("llamagen-t2i", fixtures_dir / FIXTURE, tiny("llamagen"), tmp_path / "b")
  from maskgil_jax.training import trainer
  with pytest.raises(ConfigError, match="config.data.name: a caption model trains on image-"):
    trainer.check_config(tiny("maskgil_t2i"))
  with pytest.raises(ConfigError, match="text.max_length: 60 differs"):
    configlib.finalize(configlib.load_config("tiny:llamagen_t2i", ["text.max_length=60"]))


def test_sample_command_turns_prompts_into_llamagens_tokens(fixtures_dir, io, tmp_path, capsys):
  from maskgil_jax import sample
  common = ["--config", "tiny:llamagen_t2i", "--ckpt", fixtures_dir / FIXTURE, "--decode", "ar",
            "--tokens-only", "--temperature", "0", "--cfg-scale", "2"]
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("\n".join(io_prompts(fixtures_dir)[1:]) + "\n")
  argv = common + ["--text-encoder", fixtures_dir / "t5_encoder_tiny", "--prompt",
                   io_prompts(fixtures_dir)[0], "--prompts", prompts, "--out", tmp_path / "out"]
  assert sample.main([str(a) for a in argv]) == 0
  with np.load(tmp_path / "out" / "samples.npz") as f:
    np.testing.assert_array_equal(f["tokens"].reshape(4, 16), io["tokens_s3"])
  bad = [(common + ["--labels", "1", "--out", tmp_path / "a"], "text-to-image model"),
         (["--config", "tiny:llamagen", "--ckpt", fixtures_dir / "llamagen_gpt_tiny.safetensors",
           "--tokens-only", "--prompt", "a bag", "--out", tmp_path / "b"], "class-conditional"),
         (common + ["--prompt", "a bag", "--out", tmp_path / "c"], "--text-encoder DIR")]
  for argv, message in bad:
    assert sample.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def io_prompts(fixtures_dir):
  return [str(p) for p in np.load(fixtures_dir / "t5_encoder_tiny_io.npz")["prompts"]]


@pytest.mark.parametrize("objective", ["mar", "ar"])
def test_a_caption_model_trains_with_caption_drop(io, objective):
  from maskgil_jax.training import objectives, optim, state, steps
  config = tiny("maskgil_t2i")
  config.objective.name = objective
  config.objective.label_drop = 0.5
  config.optim.lr = 3e-3
  tx = optim.make_optimizer(config.optim, config.total_steps)
  loss_fn = {"mar": objectives.mar_loss, "ar": objectives.ar_loss}[objective]
  step = jax.jit(steps.make_generator_step(
      lambda m, b, k: loss_fn(m, b, k, config.objective), tx,
      optim.learning_rate(config.optim, config.total_steps)))
  s = state.init_train_state(caption_model(3), tx)
  null_before = np.asarray(s.params.cls_embedding["uncond_embedding"][...])
  batch = {"codes": jnp.asarray(io["codes"], jnp.int32).reshape(4, 4, 4),
           "caption": jnp.asarray(io["caption_embs"]), "caption_mask": jnp.asarray(io["emb_masks"])}
  losses = []
  for _ in range(6):
    s, metrics = step(s, batch, jax.random.key(0))
    losses.append(float(metrics["loss"]))
  assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  # dropped captions train the null caption
  assert not np.allclose(s.params.cls_embedding["uncond_embedding"][...], null_before)
