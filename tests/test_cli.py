"""The one command shell: every command answers a user mistake with one `error:` line, exit
status 2, and leaves what is on disk as it was.

Each case runs the command's `main(argv)` in-process (the commands are plain functions of their
arguments) with one mistake: an unknown config field, a missing file, an output that already
exists, or a bad value. The folder it works in is compared before and after.
"""
import hashlib
import pathlib

import pytest

from maskgil_jax import (app, cli, convert, demo, demo_quality, evaluate, export,
                         extract_codes, extract_text, params, sample, study, train, vq)
from maskgil_jax.configlib import load as config_load

MODULES = {"train": train, "sample": sample, "evaluate": evaluate, "convert": convert,
           "export": export, "vq": vq, "extract_codes": extract_codes, "params": params,
           "demo": demo, "demo_quality": demo_quality, "app": app, "study": study,
           "extract_text": extract_text}


def snapshot(folder: pathlib.Path) -> dict:
  return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest()
                                       if p.is_file() else "dir")
          for p in sorted(folder.rglob("*"))}


@pytest.fixture
def place(tmp_path, fixtures_dir):
  """A work folder holding an existing output of each kind (a file and a folder)."""
  (tmp_path / "taken.npz").write_bytes(b"someone else's file")
  (tmp_path / "taken.json").write_text("{}")
  (tmp_path / "taken.pt").write_bytes(b"someone else's weights")
  (tmp_path / "taken_dir").mkdir()
  (tmp_path / "taken_dir" / "keep.txt").write_text("mine")
  (tmp_path / "a_file").write_text("not a folder")
  latin1 = "a red bag\ncafé au lait\n".encode("latin-1")  # not UTF-8 on line 2
  (tmp_path / "latin1.txt").write_bytes(latin1)
  (tmp_path / "latin1.jsonl").write_bytes(b'{"image": "x.png", "caption": "ok"}\n'
                                          b'{"image": "y.png", "caption": "caf\xe9"}\n')
  (tmp_path / "captions").mkdir()
  (tmp_path / "captions" / "img.png").write_bytes(b"")
  (tmp_path / "captions" / "img.txt").write_bytes(latin1)
  return tmp_path


def cases(t: pathlib.Path, fx: pathlib.Path) -> list[tuple[str, list, str]]:
  """(command, argv, text the one error line must contain)."""
  gpt = str(fx / "maskgil_gpt_tiny.safetensors")
  vq_file = str(fx / "llamagen_vq_tiny.safetensors")
  tiny = ["--config", "tiny"]
  hybrid = ["hybrid", "--config", "tiny:maskgil_reference", "--ckpt", gpt, "--steps", "2",
            "--tokenizer", vq_file]
  return [
      # unknown or mistyped config field
      ("train", [*tiny, "--workdir", t / "w", "--config.model.nosuch=1"], "config.model.nosuch"),
      ("sample", ["--config", "tiny:maskgil_reference", "--ckpt", gpt, "--out", t / "s",
                  "--config.decode.stepz=3"], "config.decode.stepz"),
      ("convert", ["--kind", "vq16", "--src", vq_file, *tiny, "--out", t / "c",
                   "--config.tokenizer.chh=3"], "config.tokenizer.chh"),
      ("vq", ["reconstruct", "--ckpt", vq_file, "--images", t / "taken.npz", "--out", t / "r.npz",
              *tiny, "--config.tokenizer.nosuch=1"], "config.tokenizer.nosuch"),
      ("extract_codes", [*tiny, "--out", t / "codes", "--config.data.nosuch=1"],
       "config.data.nosuch"),
      ("extract_text", ["--config", "tiny:maskgil_t2i", "--out", t / "f",
                        "--config.text.nosuch=1"], "config.text.nosuch"),
      ("params", [*tiny, "--config.model.nosuch=1"], "config.model.nosuch"),
      ("evaluate", ["--samples", t / "taken.npz", "--inception", "w.pth", "--nosuch"],
       "--nosuch"),
      ("export", ["--workdir", t / "w", "--layout", "native", "--out", t / "o.pt", "--nosuch"],
       "--nosuch"),
      ("demo", ["--workdir", t / "d", "--nosuch", "1"], "--nosuch"),
      ("app", ["--config", "tiny:maskgil_reference", "--ckpt", gpt, "--config.decode.stepz=3"],
       "config.decode.stepz"),
      ("study", [*hybrid, "--ar-tokens", "0", "--out", t / "st", "--config.decode.stepz=3"],
       "config.decode.stepz"),
      # a file that is not there
      ("train", ["--config", t / "missing.py", "--workdir", t / "w"], "missing.py"),
      ("sample", ["--config", "tiny:maskgil_reference", "--ckpt", t / "missing.pt", "--out",
                  t / "s", "--tokens-only"], "missing.pt"),
      ("convert", ["--kind", "vq16", "--src", t / "missing.pt", *tiny, "--out", t / "c"],
       "missing.pt"),
      ("vq", ["reconstruct", "--ckpt", vq_file, "--images", t / "missing", "--out", t / "r.npz"],
       "missing"),
      ("extract_codes", ["--config", t / "missing.py", "--out", t / "codes"], "missing.py"),
      ("extract_text", ["--config", t / "missing.py", "--out", t / "f"], "missing.py"),
      ("params", ["--config", "missing_config"], "missing_config"),
      ("evaluate", ["--samples", t / "missing.npz", "--ref", t / "missing.npz", "--inception",
                    t / "missing.pth"], "missing"),
      ("export", ["--workdir", t / "missing", "--layout", "native", "--out", t / "o.pt"],
       "missing"),
      ("app", ["--config", "tiny:maskgil_reference", "--ckpt", t / "missing.pt"], "missing.pt"),
      ("study", ["hybrid", "--config", "tiny:maskgil_reference", "--ckpt", t / "missing.pt",
                 "--steps", "2", "--ar-tokens", "0", "--tokenizer", vq_file, "--out", t / "st"],
       "missing.pt"),
      # an output that exists (nothing is replaced without --overwrite)
      ("sample", ["--config", "tiny:maskgil_reference", "--ckpt", gpt, "--out", t / "taken_dir",
                  "--tokens-only"], "--overwrite"),
      ("convert", ["--kind", "vq16", "--src", vq_file, *tiny, "--out", t / "taken_dir"],
       "--overwrite"),
      ("vq", ["reconstruct", "--ckpt", vq_file, "--images", t / "taken.npz", "--out",
              t / "taken.npz"], "--overwrite"),
      ("evaluate", ["--samples", t / "taken.npz", "--ref", t / "taken.npz", "--inception",
                    t / "w.pth", "--out", t / "taken.json"], "--overwrite"),
      ("export", ["--workdir", t / "w", "--layout", "native", "--out", t / "taken.pt"],
       "--overwrite"),
      ("train", [*tiny, "--workdir", t / "a_file" / "w"], "--workdir"),
      ("demo", ["--workdir", t / "a_file" / "demo"], "--workdir"),
      ("study", [*hybrid, "--ar-tokens", "0", "--out", t / "taken_dir"], "--overwrite"),
      # a bad value
      ("train", [*tiny, "--workdir", t / "w", "--config.model.dim=abc"], "config.model.dim"),
      ("train", [*tiny, "--workdir", t / "w", "--config.batch_size=0"], "config.batch_size"),
      ("train", [*tiny, "--workdir", t / "w", "--profile", "x"], "--profile"),
      ("sample", ["--config", "tiny:maskgil_reference", "--ckpt", gpt, "--out", t / "s",
                  "--batch-size", "0", "--tokens-only"], "--batch-size"),
      ("sample", ["--config", "tiny:maskgil_reference", "--ckpt", gpt, "--out", t / "s",
                  "--decode", "sideways"], "--decode"),
      ("sample", ["--config", "tiny:maskgil_reference", "--ckpt", gpt, "--out", t / "s",
                  "--cfg-scale", "nan", "--tokens-only"], "config.decode.cfg_scale: must be a "
       "finite number, got nan"),
      ("sample", ["--config", "tiny:maskgil_reference", "--ckpt", gpt, "--out", t / "s",
                  "--decode", "hybrid", "--ar-cfg-scale=inf", "--tokens-only"],
       "config.decode.ar_cfg_scale: must be a finite number, got inf"),
      ("sample", ["--config", "tiny:maskgil_reference", "--ckpt", gpt, "--out", t / "s",
                  "--width", "0", "--tokens-only"], "--width 0: must be a positive multiple"),
      ("sample", ["--config", "tiny:maskgil_reference", "--ckpt", gpt, "--out", t / "s",
                  "--height", "0", "--tokens-only"], "--height 0: must be a positive multiple"),
      ("sample", ["--config", "tiny:maskgil_reference", "--ckpt", gpt, "--out", t / "s",
                  "--seed", str(2**70), "--tokens-only"], "--seed: an integer from -2**63"),
      ("convert", ["--kind", "vq17", "--src", vq_file, *tiny, "--out", t / "c"], "--kind"),
      ("vq", ["reconstruct", "--ckpt", vq_file, "--images", t / "taken.npz", "--out",
              t / "r.npz", "--batch-size", "0"], "--batch-size"),
      ("vq", ["rebuild"], "rebuild"),
      ("extract_codes", [*tiny, "--out", t / "codes", "--batch-size", "0"], "--batch-size"),
      ("extract_text", ["--config", "tiny:maskgil_t2i", "--out", t / "f", "--batch-size", "0"],
       "--batch-size"),
      ("extract_text", ["--config", "tiny:maskgil_t2i", "--out", t / "f",
                        "--config.data.name=caption_folder",
                        f"--config.data.path={t / 'taken_dir'}"],
       "data.path: no image with a non-empty caption"),
      ("train", ["--config", "tiny:maskgil_t2i", "--workdir", t / "w"], "config.data.name"),
      ("train", ["--config", "tiny:maskgil_t2i", "--workdir", t / "w",
                 "--config.data.name=demo_captions", "--config.data.buckets=((8, 8), (8, 5))"],
       "config.data.buckets[1]"),
      ("params", [*tiny, "--config.model.layout=sideways"], "config.model.layout"),
      ("evaluate", ["--samples", t / "taken.npz", "--ref", t / "taken.npz", "--inception",
                    t / "w.pth", "--batch", "0"], "--batch"),
      ("export", ["--workdir", t / "w", "--layout", "sideways", "--out", t / "o.pt"], "--layout"),
      ("demo", ["--workdir", t / "d", "--generator-steps", "-1"], "--generator-steps"),
      ("demo_quality", ["--out", t / "taken.npz"], "--overwrite"),
      ("vq", ["compare", "--tokenizers", f"a={t / 'missing.pt'}", "--images", "demo", "--out",
              t / "cmp"], "missing.pt"),
      ("vq", ["compare", "--tokenizers", f"a={vq_file}", "--images", "demo", "--out",
              t / "taken_dir"], "--overwrite"),
      ("vq", ["compare", "--tokenizers", "just_a_path", "--images", "demo", "--out", t / "cmp"],
       "--tokenizers"),
      ("vq", ["compare", "--tokenizers", f"a={vq_file}:vq17", "--images", "demo", "--out",
              t / "cmp"], f"--tokenizers: a={vq_file}:vq17: unknown preset 'vq17'; one of ["),
      ("convert", ["--kind", "vq16", "--src", vq_file, *tiny, "--out", t / "c", "--ema=3"],
       "--ema"),
      ("demo_quality", ["--out", t / "c.npz", "--steps", "0"], "--steps"),
      ("demo_quality", ["--out", t / "c.npz", "--nosuch"], "--nosuch"),
      ("app", ["--config", "tiny:maskgil_reference", "--ckpt", gpt, "--port", "70000"], "--port"),
      ("study", [*hybrid, "--ar-tokens", "0,99", "--out", t / "st"], "--ar-tokens [99]"),
      # a text file that is not UTF-8: named with its first bad line
      ("sample", ["--config", "tiny:maskgil_t2i", "--ckpt", gpt, "--out", t / "s",
                  "--prompts", t / "latin1.txt", "--tokens-only"],
       f"--prompts {t / 'latin1.txt'}: line 2 is not UTF-8"),
      ("extract_text", ["--config", "tiny:maskgil_t2i", "--out", t / "f",
                        "--config.data.name=caption_jsonl",
                        f"--config.data.path={t / 'latin1.jsonl'}"],
       f"data.path: manifest {t / 'latin1.jsonl'}: line 2 is not UTF-8"),
      ("extract_text", ["--config", "tiny:maskgil_t2i", "--out", t / "f",
                        "--config.data.name=caption_folder",
                        f"--config.data.path={t / 'captions'}"],
       f"data.path: caption file {t / 'captions' / 'img.txt'}: line 2 is not UTF-8"),
      ("app", ["--config", "tiny:maskgil_reference", "--ckpt", gpt, "--class-names",
               t / "latin1.txt"], f"--class-names {t / 'latin1.txt'}: line 2 is not UTF-8"),
      # a MAR-only model cannot write the hybrid's AR tokens
      ("study", [*hybrid, "--ar-tokens", "0,8", "--out", t / "st"], "--ar-ckpt"),
  ]


def test_every_command_is_covered():
  assert {c for c, *_ in cases(pathlib.Path("t"), pathlib.Path("f"))} == set(MODULES)


@pytest.mark.parametrize("index", range(len(cases(pathlib.Path("t"), pathlib.Path("f")))))
def test_a_mistake_is_one_error_line_exit_2_and_nothing_changes(index, place, fixtures_dir,
                                                                 capsys):
  command, argv, named = cases(place, fixtures_dir)[index]
  before = snapshot(place)
  code = MODULES[command].main([str(a) for a in argv])
  out, err = capsys.readouterr()
  lines = err.strip().splitlines()
  assert code == 2, (command, err)
  assert lines[-1].startswith("error: ") and named in lines[-1], (command, err)
  assert "Traceback" not in err and len([l for l in lines if l.startswith("error")]) == 1
  assert snapshot(place) == before, f"{command} changed the folder"


def test_overrides_take_both_spellings_and_config_names_resolve_anywhere(tmp_path, monkeypatch):
  p = cli.Parser("x", "test", config="required")
  a = p.parse(["--config", "tiny", "--config.model.dim=64", "--config.batch_size", "8"])
  assert a.config_overrides == ["model.dim=64", "batch_size=8"]
  config = cli.load_config(a)
  assert config.model.dim == 64 and config.batch_size == 8
  monkeypatch.chdir(tmp_path)  # by name, and as configs/NAME.py, from another folder
  assert config_load.load_config("maskgil:B").model.dim == 768
  assert config_load.load_config("configs/maskgil.py:B").model.dim == 768


def test_paths_in_a_finalized_config_are_absolute(tmp_path, monkeypatch):
  from maskgil_jax import configlib
  monkeypatch.chdir(tmp_path)
  c = configlib.load_config("tiny", ["tokenizer.ckpt=runs/vq", "ckpt.init_from=gs://b/run",
                                     "tokenizer.loss.lpips_weights=a.pt,b.pt"])
  f = configlib.finalize(c)
  assert f.tokenizer.ckpt == str(tmp_path / "runs" / "vq")
  assert f.ckpt.init_from == "gs://b/run"
  assert f.tokenizer.loss.lpips_weights == f"{tmp_path / 'a.pt'},{tmp_path / 'b.pt'}"
  assert configlib.finalize(f).tokenizer.ckpt == f.tokenizer.ckpt  # idempotent


@pytest.mark.parametrize("command", ["train", "sample", "convert", "params", "extract_codes",
                                     "extract_text", "app", "study"])
def test_help_lists_the_shipped_configs_as_they_are_now(command, tmp_path, monkeypatch, capsys):
  """`--help` names the configs `--config NAME` accepts, read from their folder when the help
  is shown: a config added there is listed, one that is gone is not."""
  folder = tmp_path / "configs"
  folder.mkdir()
  for name in ("alpha", "maskgil", "_private"):
    (folder / f"{name}.py").write_text("def get_config(): pass\n")
  monkeypatch.setattr(config_load, "shipped_configs", lambda: folder)
  argv = ["hybrid", "--help"] if command == "study" else ["--help"]
  with pytest.raises(SystemExit) as exit_:
    MODULES[command].main(argv)
  assert exit_.value.code == 0
  text = " ".join(capsys.readouterr().out.split())
  assert "Shipped: alpha, maskgil" in text and "_private" not in text and "tiny" not in text


def test_help_lists_the_configs_shipped_with_the_package(capsys):
  with pytest.raises(SystemExit):
    params.main(["--help"])
  text = " ".join(capsys.readouterr().out.split())
  assert f"Shipped: {', '.join(config_load.shipped_config_names())}" in text
  assert "tiny" in config_load.shipped_config_names()
