"""The web demo: its request handler (no browser), and the page itself driven in headless
Chromium: pick a class, generate, see images of the model's size; a bad value shows a message
and the server keeps serving.

The browser test needs the `app` extra (Gradio), Playwright's Python package and Debian's
`chromium` (never `playwright install`: the system browser is driven); it is skipped, saying
which is missing, where any is not installed. Set MASKGIL_CHROMIUM to use another Chromium.
"""
import importlib.util
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from maskgil_jax import app, app_page, pipeline
from tiny_models import write_random_vq

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
         "Ankle boot"]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def model_files(fixtures_dir, tmp_path_factory):
  folder = tmp_path_factory.mktemp("app")
  (folder / "names.txt").write_text("\n".join(NAMES) + "\n")
  return (fixtures_dir / "maskgil_gpt_tiny.safetensors",
          write_random_vq(folder / "vq_tiny.pt"), folder / "names.txt")


# ---- the handler, without a browser ------------------------------------------------------------
def test_the_handler_streams_batches_and_answers_bad_values(model_files, tmp_path):
  gpt, vq, _ = model_files
  pipe = pipeline.load(gpt, "tiny:maskgil_reference", vq, class_names=NAMES, batch_size=2)
  lock = threading.Lock()
  ask = lambda **kw: list(app_page.handle(pipe, lock, tmp_path, **{
      **dict(classes=["Sneaker", "bag"], prompts="", decode="mar", steps=4, cfg_scale=1.0,
             temperature=1.0, seed=0, count=2), **kw}))
  updates = ask()
  assert [len(g) for g, _, _ in updates] == [2, 4, 4]  # each batch of 2 shown as it finishes
  gallery, status, grid = updates[-1]
  assert [c for _, c in gallery] == ["Sneaker", "Sneaker", "Bag", "Bag"]
  assert "4 images of 8x8 in" in status and "mar, 4 steps" in status
  np.testing.assert_array_equal(np.stack([i for i, _ in gallery]),
                                pipe.generate(labels=[7, 7, 8, 8], steps=4, cfg_scale=1.0))
  from PIL import Image
  assert np.asarray(Image.open(grid)).shape == (16, 16, 3)  # 2x2 grid of 8x8
  for kw, message in [(dict(steps=0), "Error: steps: must be an int >= 1, got 0"),
                      (dict(classes=["Spaceship"]), "unknown class 'Spaceship'"),
                      (dict(classes=[]), "pick at least one class"),
                      (dict(steps=None), "steps: give a value"),
                      (dict(steps=2.5), "steps: a whole number"),
                      (dict(count=99), "count: 1..16"),
                      (dict(decode="ar"), "--decode ar")]:
    (gallery, status, grid), = ask(**kw)
    assert gallery == [] and grid is None and status.startswith("Error: ") and message in status


def test_a_caption_model_takes_prompt_lines(model_files, fixtures_dir, tmp_path):
  _, vq, _ = model_files  # the tiny tokenizer serves the tiny caption model too
  pipe = pipeline.load(fixtures_dir / "llamagen_gpt_t2i_tiny.safetensors", "tiny:llamagen_t2i",
                       vq, text_encoder=fixtures_dir / "t5_encoder_tiny")
  ask = lambda prompts: list(app_page.handle(pipe, threading.Lock(), tmp_path, None, prompts,
                                             "ar", 8, 2.0, 0.0, 0, 1))
  gallery, status, grid = ask("a red bag\n\n  a shoe  \n")[-1]
  assert [c for _, c in gallery] == ["a red bag", "a shoe"] and "2 images of 8x8" in status
  _, tokens = pipe.generate(prompts=["a red bag", "a shoe"], decode="ar", cfg_scale=2.0,
                            temperature=0.0, return_tokens=True)
  np.testing.assert_array_equal(np.stack([i for i, _ in gallery]),
                                pipe.images(tokens.reshape(2, -1)))
  (gallery, status, grid), = ask("  \n ")
  assert gallery == [] and status.startswith("Error: prompt: empty")


# ---- the page in a browser ----------------------------------------------------------------------
def chromium() -> str | None:
  for candidate in (os.environ.get("MASKGIL_CHROMIUM"), "chromium", "chromium-browser"):
    if candidate and shutil.which(candidate):
      return shutil.which(candidate)
  return None


def browser_missing() -> str | None:
  if importlib.util.find_spec("gradio") is None:
    return 'Gradio is not installed (pip install -e ".[app]")'
  if importlib.util.find_spec("playwright") is None:
    return "Playwright's Python package is not installed (pip install playwright)"
  if chromium() is None:
    return "no Chromium found (apt-get install chromium, or set MASKGIL_CHROMIUM)"
  return None


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def wait_until_served(proc, url: str, log: pathlib.Path, seconds: float = 240) -> None:
  deadline = time.time() + seconds
  while time.time() < deadline:
    if proc.poll() is not None:
      raise AssertionError(f"the app exited with {proc.returncode}: {log.read_text()[-3000:]}")
    try:
      with urllib.request.urlopen(url, timeout=2) as r:
        if r.status == 200:
          return
    except OSError:
      time.sleep(0.5)
  raise AssertionError(f"the app did not answer on {url} within {seconds} s")


@pytest.mark.slow
@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_the_page_in_headless_chromium(model_files, tmp_path):
  from playwright.sync_api import expect, sync_playwright
  gpt, vq, names = model_files
  port = free_port()
  url = f"http://127.0.0.1:{port}/"
  env = dict(os.environ, JAX_PLATFORMS="cpu", GRADIO_ANALYTICS_ENABLED="False",
             PYTHONPATH=str(REPO))
  log = open(tmp_path / "app.log", "w")  # a pipe nobody reads could fill and stall the server
  proc = subprocess.Popen(
      [sys.executable, "-m", "maskgil_jax.app", "--config", "tiny:maskgil_reference", "--ckpt",
       str(gpt), "--tokenizer", str(vq), "--class-names", str(names), "--port", str(port),
       "--batch-size", "4", "--title", "tiny test model"],
      env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
  try:
    wait_until_served(proc, url, tmp_path / "app.log")
    with sync_playwright() as p:
      browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
      page = browser.new_page(viewport={"width": 1280, "height": 900})
      page.goto(url)
      expect(page.locator("#generate")).to_be_visible(timeout=60_000)

      # pick a class by name besides the two picked by default, one image each
      picker = page.locator("#classes input").first
      picker.click()
      picker.fill("Sneak")
      page.get_by_role("option", name="Sneaker").click()
      page.keyboard.press("Escape")
      count = page.locator("#count input[type=number]")
      count.fill("1")
      count.press("Enter")
      page.locator("#generate").click()
      status = page.locator("#status")
      expect(status).to_contain_text("3 images of 8x8 in", timeout=180_000)
      images = page.locator("#gallery img")
      expect(images).to_have_count(3)
      page.wait_for_function("() => [...document.querySelectorAll('#gallery img')]"
                             ".every(e => e.complete && e.naturalWidth > 0)", timeout=30_000)
      sizes = images.evaluate_all("els => els.map(e => [e.naturalWidth, e.naturalHeight])")
      assert sizes == [[8, 8]] * 3, sizes
      assert "Sneaker" in page.locator("#gallery").inner_text()
      page.screenshot(path=str(tmp_path / "app.png"), full_page=True)

      # a bad value: a message in the page, and the server goes on serving
      steps = page.locator("#steps input")
      steps.fill("0")
      steps.press("Tab")
      page.locator("#generate").click()
      expect(status).to_contain_text("Error: steps: must be an int >= 1", timeout=60_000)
      page.screenshot(path=str(tmp_path / "app_error.png"), full_page=True)
      browser.close()
    assert proc.poll() is None, "the server stopped after a bad value"
    with urllib.request.urlopen(url, timeout=5) as r:
      assert r.status == 200
    assert (tmp_path / "app.png").stat().st_size > 0
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
      proc.kill()
    log.close()
  shot = os.environ.get("MASKGIL_APP_SCREENSHOT")  # where CI keeps the screenshot, if it asks
  if shot:
    shutil.copy(tmp_path / "app.png", shot)


def test_the_command_refuses_a_taken_port(model_files, capsys):
  gpt, vq, _ = model_files
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    code = app.main(["--config", "tiny:maskgil_reference", "--ckpt", str(gpt), "--tokenizer",
                     str(vq), "--port", str(port)])
  err = capsys.readouterr().err
  if importlib.util.find_spec("gradio") is None:
    assert code == 2 and "needs Gradio" in err
  else:
    assert code == 2 and f"--port {port}: cannot listen" in err, err
