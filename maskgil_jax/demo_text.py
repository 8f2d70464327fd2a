"""`python -m maskgil_jax.demo --task text --workdir DIR`: text-to-image on a CPU, end to end.

1. trains the demo tokenizer (the class demo's stage, `configs/demo.py:tokenizer`),
2. makes a text encoder that needs no download: a SentencePiece model trained on the demo's
   training captions (word pieces: words never seen in training become <unk>) and a T5 encoder of the FLAN-T5 architecture at tiny size (2 layers,
   64 wide) with random weights, frozen, written as a Hugging Face folder that the ordinary
   `text.encoder` path reads,
3. trains the caption-conditioned MaskGIL (`configs/demo_text.py`) on two aspect buckets
   (32x32 and 32x24 px), the frozen T5 encoding the captions inside every step,
4. samples from prompts written with templates held out of training ("a product shot of a
   sneaker") at both shapes, 8 MAR steps, and judges them with the shipped demo classifier:
   its accuracy on the class each prompt names, and the Frechet distance to held-out real
   images (portrait samples are padded to 32x32 for the judge, as their real counterparts),
   written to `DIR/results.json` with a grid of prompts and samples at `DIR/samples.png`.

Why a frozen random T5: the generator's caption MLP learns to read any fixed, injective
text features, and with a frozen encoder the features can be extracted once (`extract_text`)
exactly as for FLAN-T5-XL; the class-name word is what the samples must follow, and its
piece embedding already tells the classes apart. Every stage resumes like the class demo's.
"""
from __future__ import annotations

import json
import pathlib
import time

import jax
import numpy as np
from flax import nnx

from maskgil_jax import configlib, loading
from maskgil_jax.data import demo_captions, preprocess
from maskgil_jax.data.demo_set import load_demo
from maskgil_jax.decode import DecodeSettings, captioned_grid, generate_tokens
from maskgil_jax.decode import tokens_to_images, write_png
from maskgil_jax.evaluation.demo_judge import demo_quality
from maskgil_jax.interop import names, t5_names, torch_io
from maskgil_jax.models.conditions import Caption
from maskgil_jax.models.t5 import T5Encoder, T5Spec
from maskgil_jax.models.transformer import at_grid
from maskgil_jax.text.encoder import caption_features

SHAPES = {"square": (32, 32), "portrait": (32, 24)}


def t5_config(vocab_size: int, width: int) -> dict:
  """A Hugging Face T5 config: the FLAN-T5 architecture (gated GELU) at demo size."""
  return {"architectures": ["T5EncoderModel"], "model_type": "t5", "d_model": width,
          "d_kv": width // 4, "num_heads": 4, "d_ff": 2 * width, "num_layers": 2,
          "vocab_size": vocab_size, "feed_forward_proj": "gated-gelu",
          "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16,
          "layer_norm_epsilon": 1e-6, "pad_token_id": 0, "eos_token_id": 1}


def write_text_encoder(folder: pathlib.Path, width: int, seed: int = 0) -> None:
  """SentencePiece on the training captions + a random T5 encoder, as a Hugging Face folder
  (`spiece.model`, `config.json`, `model.safetensors`); skipped when already complete."""
  if (folder / "model.safetensors").is_file():
    return
  import sentencepiece
  folder.mkdir(parents=True, exist_ok=True)
  captions = sorted({c for label in range(len(demo_captions.class_words()))
                     for c in demo_captions.captions_for(label)})
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(captions * 20), model_prefix=str(folder / "spiece"),
      vocab_size=64, model_type="word", hard_vocab_limit=False, character_coverage=1.0,
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
  (folder / "spiece.vocab").unlink(missing_ok=True)
  sp = sentencepiece.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
  hf = t5_config(sp.vocab_size(), width)
  (folder / "config.json").write_text(json.dumps(hf, indent=1))
  model = T5Encoder(T5Spec.from_hf_config(hf), rngs=nnx.Rngs(seed))
  torch_io.save_state_dict(names.export_state_dict(model, t5_names.RULES),
                           folder / "model.safetensors")


def portrait_real(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
  """Held-out real images as the portrait bucket shows them (28 x 21 centre cut, padded to
  32 x 24), then padded to 32 x 32 for the judge; uint8 [N, 32, 32, 3] and labels."""
  images, labels = load_demo(split)
  cut = [preprocess.fit(x[:, 4:25], (32, 24), "pad") for x in images]
  return np.stack([preprocess.fit(x, 32, "pad") for x in cut]), labels


def square_real(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
  images, labels = load_demo(split)
  return np.stack([preprocess.fit(x, 32, "pad") for x in images]), labels


def sample_prompts(model, tokenizer, features, mask, grid, seed: int, settings,
                   batch: int = 250) -> np.ndarray:
  """uint8 images for caption features [N, P, C] over `grid`, in fixed-size batches."""
  model = at_grid(model, grid)
  n = len(features)
  batch = min(batch, n)
  pad = -n % batch
  features = np.concatenate([features, np.repeat(features[:1], pad, 0)])
  mask = np.concatenate([mask, np.repeat(mask[:1], pad, 0)])
  out = []
  for i in range(0, len(features), batch):
    cond = Caption.create(features[i:i + batch], mask[i:i + batch])
    key = jax.random.fold_in(jax.random.key(seed), i)
    tokens = generate_tokens(model, cond, key, settings, "mar")
    out.append(np.asarray(tokens_to_images(tokenizer, tokens, grid)))
  return np.concatenate(out)[:n]


def to_model_range(images_uint8) -> np.ndarray:
  return np.asarray(images_uint8, np.float32) / 127.5 - 1.0


def run(args, stage_config, run_stage) -> None:
  """The text demo (module doc); `stage_config` and `run_stage` are the class demo's."""
  workdir = pathlib.Path(args.workdir).absolute()
  tok_dir, text_dir, gen_dir = (workdir / "tokenizer", workdir / "text_encoder",
                                workdir / "generator")
  seconds = {}
  tok_config = stage_config("tokenizer", args.tokenizer_steps)
  seconds["tokenizer"] = run_stage(tok_config, tok_dir)

  start = time.time()
  gen_config = configlib.load_config("demo_text")
  write_text_encoder(text_dir, gen_config.model.caption_dim)
  seconds["text_encoder"] = time.time() - start
  if args.generator_steps is not None:
    gen_config.total_steps = args.generator_steps
    gen_config.optim.warmup_steps = min(gen_config.optim.warmup_steps, args.generator_steps // 10)
  gen_config.tokenizer.ckpt = str(tok_dir)
  gen_config.text.encoder = str(text_dir)
  seconds["generator"] = run_stage(gen_config, gen_dir)

  start = time.time()
  config = configlib.finalize(gen_config)
  tokenizer = loading.load_tokenizer(tok_dir, config.tokenizer)
  model = loading.load_generator(gen_dir, config.model)
  settings = DecodeSettings.from_config(config.decode)
  text = loading.load_text_encoder(text_dir, config.text, config.model.caption_dim)
  prompts, labels = demo_captions.held_out_prompts(args.per_class)
  features, mask = caption_features(text, prompts)
  down = 2 ** (len(config.tokenizer.ch_mult) - 1)
  reals = {"square": square_real()[0], "portrait": portrait_real()[0]}
  results, shown = {}, {}
  for name, (h, w) in SHAPES.items():
    images = sample_prompts(model, tokenizer, features, mask, (h // down, w // down),
                            config.seed, settings)
    judged = np.stack([preprocess.fit(x, 32, "pad") for x in images])
    results[f"maskgil_text_{name}_{h}x{w}"] = demo_quality(to_model_range(judged), labels,
                                                            to_model_range(reals[name]))
    shown[name] = [images[labels == c][0] for c in range(len(demo_captions.class_words()))]
  seconds["sampling"] = time.time() - start

  first = [prompts[int(np.flatnonzero(labels == c)[0])]
           for c in range(len(demo_captions.class_words()))]
  cells = [x for pair in zip(shown["square"], [preprocess.fit(p, (32, 32), "pad")
                                                 for p in shown["portrait"]]) for x in pair]
  write_png(workdir / "samples.png",
            captioned_grid(np.stack(cells), [t for p in first for t in (p, p + " (32x24)")]))
  results["settings"] = {
      "decode": {k: config.decode[k] for k in ("steps", "cfg_scale", "temperature",
                                               "choice_temperature")},
      "prompts_per_class": args.per_class, "held_out_templates": demo_captions.HELD_OUT_TEMPLATES,
      "train_templates": demo_captions.TRAIN_TEMPLATES, "buckets": [list(b) for b in
                                                                   config.data.buckets],
      "tokenizer_steps": tok_config.total_steps, "generator_steps": gen_config.total_steps,
      "text_encoder": "random frozen T5 (2 layers, 64 wide), SentencePiece on train captions"}
  results["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
  (workdir / "results.json").write_text(json.dumps(results, indent=2))
  for name, r in results.items():
    if name.startswith("maskgil"):
      print(f"{name:<32} classifier accuracy {r['classifier_accuracy']:.3f}   "
            f"Frechet distance {r['frechet_distance']:.2f}")
  print(f"demo: samples {workdir / 'samples.png'}, figures {workdir / 'results.json'}, "
        f"{sum(seconds.values()) / 60:.1f} min")
