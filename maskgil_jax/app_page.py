"""The web demo's page (Gradio) and the request handler behind it.

`handle` is plain Python (no Gradio): it turns the page's values into a `Pipeline.stream` call
and yields (gallery items, status line, grid PNG path or None) after every finished batch, so the
images appear as they finish and the status tells the time taken. A bad value (steps 0, an
unknown class name, an empty prompt, ...) yields its message as the status line: the page shows
it and the server goes on. `build` lays the page out; Gradio is imported only there, so the core
install never needs it (`pip install "maskgil_jax[app]"`).
"""
from __future__ import annotations

import logging
import pathlib
import tempfile
import threading
import time
from collections.abc import Iterator

import numpy as np

from maskgil_jax.decode import image_grid, write_png
from maskgil_jax.errors import UserError

MAX_PER_ITEM = 16  # images per class or prompt one request may ask for
ERROR_PREFIX = "Error: "
CSS = "#gallery img { image-rendering: pixelated; }"  # small images scaled up stay crisp
_log = logging.getLogger(__name__)


def _number(value, name: str, kind=float):
  """A page field as a number; a UserError naming the field when it is empty or not one."""
  if value is None or (isinstance(value, str) and not value.strip()):
    raise UserError(f"{name}: give a value")
  try:
    number = kind(value)
  except (TypeError, ValueError):
    raise UserError(f"{name}: {value!r} is not a number") from None
  if kind is int and number != float(value):
    raise UserError(f"{name}: a whole number, got {value}")
  return number


def request(pipe, classes, prompts: str, count) -> tuple[dict, list[str]]:
  """The conditions of a request ({'labels': ...} or {'prompts': ...}) with one caption per
  image: each picked class (or prompt line) `count` times."""
  count = _number(count, "count", int)
  if not 1 <= count <= MAX_PER_ITEM:
    raise UserError(f"count: 1..{MAX_PER_ITEM} images per class or prompt, got {count}")
  if pipe.condition == "caption":
    lines = [line.strip() for line in (prompts or "").splitlines() if line.strip()]
    if not lines:
      raise UserError("prompt: empty; type a description (one prompt per line)")
    items = [p for p in lines for _ in range(count)]
    return {"prompts": items}, items
  picked = [classes] if isinstance(classes, (str, int)) else list(classes or [])
  if not picked:
    raise UserError("classes: pick at least one class")
  ids = pipe.label_ids(picked)  # raises on an unknown name or id
  names = pipe.class_names or [str(i) for i in range(pipe.num_classes)]
  labels = [int(i) for i in ids for _ in range(count)]
  return {"labels": labels}, [f"{names[i]}" for i in labels]


def handle(pipe, lock: threading.Lock, out_dir: pathlib.Path, classes, prompts, decode, steps,
           cfg_scale, temperature, seed, count) -> Iterator[tuple[list, str, str | None]]:
  """(gallery items [(image, caption)], status line, PNG grid path or None) after each batch;
  one generation at a time per pipeline (`lock`, besides the page's queue)."""
  start = time.time()
  try:
    cond, captions = request(pipe, classes, prompts, count)
    settings = dict(decode=str(decode), steps=_number(steps, "steps", int),
                    cfg_scale=_number(cfg_scale, "guidance"),
                    temperature=_number(temperature, "temperature"),
                    seed=_number(seed, "seed", int))
    with lock:
      images = []
      for batch, _ in pipe.stream(**cond, **settings):
        images.extend(batch)
        yield (list(zip(images, captions)),
               f"{len(images)} of {len(captions)} images, {time.time() - start:.1f} s", None)
      grid = out_dir / f"grid_{time.strftime('%Y%m%d_%H%M%S')}_{seed}_{len(images)}.png"
      write_png(grid, image_grid(np.stack(images)))
  except UserError as e:  # the page's fields are the decode settings: named without the prefix
    yield [], ERROR_PREFIX + " ".join(str(e).replace("config.decode.", "").split()), None
    return
  except Exception as e:  # a page never takes the server down: say it, log it, go on
    _log.exception("app: request failed")
    yield [], f"{ERROR_PREFIX}{type(e).__name__}: {e}", None
    return
  h, w = images[0].shape[:2]
  yield (list(zip(images, captions)),
         f"{len(images)} images of {h}x{w} in {time.time() - start:.1f} s ({settings['decode']}, "
         f"{settings['steps']} steps, guidance {settings['cfg_scale']:g}, temperature "
         f"{settings['temperature']:g}, seed {settings['seed']})", str(grid))


def describe(pipe, title: str) -> str:
  c = pipe.config.model
  kind = ("text-to-image" if pipe.condition == "caption" else
          f"{pipe.num_classes} classes" + (" (by name)" if pipe.class_names else ""))
  return (f"### {title}\n{c.layout} layout, {c.n_layer} layers, width {c.dim}; "
          f"{pipe.image_size}x{pipe.image_size} images from a {c.grid_size}x{c.grid_size} "
          f"token grid; {kind}; decoders: {', '.join(pipe.methods)}.")


def build(pipe, title: str = "maskgil_jax", out_dir: str | None = None):
  """The Gradio page of `pipe` (not launched). Gradio's queue runs one generation at a time."""
  import gradio as gr
  out = pathlib.Path(out_dir or tempfile.mkdtemp(prefix="maskgil_app_"))
  lock = threading.Lock()
  d = pipe.config.decode
  from maskgil_jax.decode.generate import method_for
  default_method = method_for(pipe.config)
  if default_method not in pipe.methods:
    default_method = pipe.methods[0]

  with gr.Blocks(title=title, analytics_enabled=False) as page:
    gr.Markdown(describe(pipe, title))
    with gr.Row():
      with gr.Column(scale=1):
        if pipe.condition == "caption":
          classes = gr.State(None)
          prompts = gr.Textbox(label="Prompts (one per line)", lines=3, elem_id="prompts")
        else:
          choices = list(pipe.class_names or [str(i) for i in range(pipe.num_classes)])
          classes = gr.Dropdown(choices, value=choices[:2], multiselect=True,
                                allow_custom_value=True, label="Classes", elem_id="classes",
                                info="pick from the list or type a name or number")
          prompts = gr.State("")
        decode = gr.Radio(list(pipe.methods), value=default_method, label="Decoder",
                          elem_id="decode")
        with gr.Row():
          steps = gr.Number(d.steps, label="Steps", precision=0, elem_id="steps")
          cfg = gr.Number(d.cfg_scale, label="Guidance w", elem_id="guidance")
        with gr.Row():
          temperature = gr.Number(d.temperature, label="Temperature", elem_id="temperature")
          seed = gr.Number(0, label="Seed", precision=0, elem_id="seed")
        count = gr.Slider(1, MAX_PER_ITEM, value=4, step=1, label="Images per class or prompt",
                          elem_id="count")
        run = gr.Button("Generate", variant="primary", elem_id="generate")
      with gr.Column(scale=2):
        status = gr.Markdown("", elem_id="status")
        gallery = gr.Gallery(label="Samples", columns=6, object_fit="contain",
                             elem_id="gallery", format="png")
        download = gr.DownloadButton("Download PNG grid", elem_id="download")

    def on_click(*values):
      yield from handle(pipe, lock, out, *values)

    run.click(on_click, [classes, prompts, decode, steps, cfg, temperature, seed, count],
              [gallery, status, download], concurrency_limit=1, concurrency_id="generate")
  page.queue(default_concurrency_limit=1)
  return page
