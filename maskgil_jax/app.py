"""`python -m maskgil_jax.app`: a web page to try a model (`pip install "maskgil_jax[app]"`).

  python -m maskgil_jax.app [--ckpt CKPT] [--config CONFIG] [--tokenizer PATH] \
      [--text-encoder DIR] [--ar-ckpt CKPT --ar-config CONFIG] [--port 7860] [--host 127.0.0.1]

CKPT is what the sample command takes (our checkpoint, or a PyTorch GPT file with --config); by
default the demo's trained model (`python -m maskgil_jax.demo`'s workdir, out/demo/generator).
The page picks classes (by name where the model has names) or takes prompts (caption models),
the decoder, steps, guidance, temperature, seed and count, shows the images as each batch
finishes with the time taken, and offers the PNG grid for download. Requests are queued and run
one at a time; a bad value is answered in the page. The server listens on --host (this machine
only by default) until Ctrl-C.
"""
from __future__ import annotations

import argparse  # noqa: F401 (the Namespace type)
import os
import pathlib
import socket
import tempfile

from maskgil_jax import cli
from maskgil_jax.text_files import read_lines

DEFAULT_PORT = 7860


def parse_args(argv=None) -> argparse.Namespace:
  p = cli.Parser("app", "A web page to generate images with a model (needs the app extra: "
                 'pip install "maskgil_jax[app]").', config="optional",
                 override_prefixes=("ar-config",),
                 usage="[--ckpt CKPT] [--config CONFIG] [--tokenizer PATH] [--port 7860]")
  p.add_argument("--ckpt", help="our checkpoint folder, or a PyTorch GPT file (with --config); "
                 "default: the demo's model, out/demo/generator")
  p.add_argument("--tokenizer", help="tokenizer weights (default: config.tokenizer.ckpt)")
  p.add_argument("--text-encoder", help="caption models: a Hugging Face T5 folder (default: "
                 "config.text.encoder)")
  p.add_argument("--ar-ckpt", help="hybrid: a separate AR model")
  p.add_argument("--ar-config", help="hybrid: the AR model's config (default: its checkpoint's)")
  p.add_argument("--ema", action="store_true", help="use the EMA parameters of our checkpoint")
  p.add_argument("--class-names", help="a file of class names, one per line (default: the "
                 "data source's, where it has them)")
  p.add_argument("--batch-size", type=int, default=8, help="images per compiled call (the "
                 "page shows each batch as it finishes)")
  p.add_argument("--port", type=int, default=DEFAULT_PORT)
  p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every "
                 "network interface)")
  p.add_argument("--title", default="maskgil_jax", help="the page's title")
  args = p.parse(argv)
  if not 1 <= args.port <= 65535:
    p.error(f"--port must be in 1..65535, got {args.port}")
  if args.batch_size < 1:
    p.error(f"--batch-size must be >= 1, got {args.batch_size}")
  return args


def default_ckpt() -> str:
  """The demo's generator, when `python -m maskgil_jax.demo` has trained it here."""
  from maskgil_jax.data.demo_set import DEMO_WORKDIR
  path = pathlib.Path(DEMO_WORKDIR) / "generator"
  if not path.is_dir():
    raise cli.UsageError(f"no --ckpt given and no demo model in {path}: train it with "
                         "`python -m maskgil_jax.demo` or give --ckpt")
  return str(path)


def check_port(host: str, port: int) -> None:
  """UsageError when another server listens on host:port (a port left in TIME_WAIT by a server
  that just stopped is free: the web server binds with SO_REUSEADDR too)."""
  with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      s.bind((host, port))
    except OSError as e:
      raise cli.UsageError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror}); "
                           "choose another --port") from None


def _main(argv=None) -> int:
  args = parse_args(argv)
  from maskgil_jax import loading, pipeline
  ckpt = args.ckpt or default_ckpt()
  # every mistake that needs no weights is reported before gradio or the weights are loaded
  config = loading.resolve_config(args.config, ckpt, args.config_overrides)
  ar_config = None
  if args.ar_ckpt:
    ar_config = loading.resolve_config(args.ar_config, args.ar_ckpt, args.ar_config_overrides,
                                       "--ar-config")
  for flag, path in (("--ckpt", ckpt), ("--ar-ckpt", args.ar_ckpt),
                     ("--tokenizer", args.tokenizer), ("--text-encoder", args.text_encoder),
                     ("--class-names", args.class_names)):
    if path and "://" not in str(path) and not os.path.exists(path):
      raise FileNotFoundError(2, f"{flag}: no such file or folder", str(path))
  names = None
  if args.class_names:
    names = [l.strip() for l in read_lines(args.class_names, "--class-names") if l.strip()]
  try:
    import gradio  # noqa: F401
  except ImportError:
    raise cli.UsageError('the web demo needs Gradio: pip install "maskgil_jax[app]" '
                         '(in a checkout: pip install -e ".[app]")') from None
  check_port(args.host, args.port)

  pipe = pipeline.load(ckpt, config, args.tokenizer, args.text_encoder, args.ar_ckpt,
                       ar_config=ar_config, ema=args.ema, class_names=names,
                       batch_size=args.batch_size)
  if pipe.tokenizer is None:
    raise cli.UsageError("the page shows images, which need a tokenizer: give --tokenizer PATH "
                         "(or set config.tokenizer.ckpt)")
  from maskgil_jax import app_page
  out = tempfile.mkdtemp(prefix="maskgil_app_")
  page = app_page.build(pipe, args.title, out)
  cli.notice(f"app: {args.title} on http://{args.host}:{args.port} (Ctrl-C stops it)")
  page.launch(server_name=args.host, server_port=args.port, allowed_paths=[out],
              ssr_mode=False, quiet=True, css=app_page.CSS, footer_links=[])
  return 0


main = cli.entry(_main, __name__)  # last: run as a command, it runs here
