"""maskgil_jax: MaskGIL (masked generative image LLaMA) in JAX/Flax, TPU first."""
import pathlib

from setuptools import find_packages, setup

ROOT = pathlib.Path(__file__).parent


def read_requirements():
  lines = (ROOT / "requirements.txt").read_text().splitlines()
  return [l.split("#")[0].strip() for l in lines if l.split("#")[0].strip()]


JAX = "jax>=0.10,<0.11"  # the accelerator extras pin the same JAX as the core
TORCH = "torch>=2.4"  # reading PyTorch .pt/.pth files (LlamaGen weights, Inception .pth)
TENSORFLOW = ["tensorflow-cpu>=2.20,<2.22"]  # TFDS dataset preparation (tfds build)
APP = ["gradio>=6,<7"]  # the web demo (python -m maskgil_jax.app); 6.31 tested
# The TPU compiler, for compiling for a TPU slice on a host without one (`--memory-report
# --topology v5p-64`, parallel/topology.py): the build jax[tpu] 0.10.2 pins (0.0.42.*), tested.
LIBTPU = ["libtpu==0.0.42.1"]

# Name, version, licence, Python version and URLs are in pyproject.toml (PEP 621); what is
# computed (requirements from requirements.txt, the extras, the package layout) stays here.
setup(
    packages=find_packages(include=["maskgil_jax", "maskgil_jax.*"]) + ["maskgil_jax.configs"],
    # the experiment files, so `--config maskgil:B` works after a non-editable install
    package_dir={"maskgil_jax.configs": "configs"},
    package_data={"maskgil_jax.data": ["demo/*.npz", "demo/*.md"]},
    install_requires=read_requirements(),
    extras_require={
        "tpu": [JAX.replace("jax", "jax[tpu]", 1)],
        "cuda": [JAX.replace("jax", "jax[cuda12]", 1)],
        "torch": [TORCH],
        "tfds": TENSORFLOW,
        "app": APP,
        "tpu-compile": LIBTPU,
        # What the tests need, pinned to what they are known to pass with: pytest 8 and 9
        # (9.2.0 measured); torch 2.13.0, the CPU build the reference fixtures were made with
        # (an open range pulls a multi-GB CUDA build where no local wheel exists); TensorFlow
        # for the TFDS mock-data test and the TF1 resize check of the FID preprocessing; the web
        # demo and Playwright's Python package for the browser test (it drives the system's
        # Chromium, never a downloaded one).
        # nbclient runs the quickstart notebook top to bottom. setuptools >= 77 (pyproject.toml's
        # licence field) for the packaging test's wheel built without build isolation; libtpu
        # compiles the tiny model for TPU slices (tests/test_topology.py).
        "test": ["pytest>=8,<10", "setuptools>=77", "torch==2.13.0", *TENSORFLOW, *APP,
                 "playwright>=1.49,<2", "nbclient>=0.10,<0.11", "nbformat>=5.9,<6",
                 "ipykernel>=6.29,<8", *LIBTPU],
    },
)
