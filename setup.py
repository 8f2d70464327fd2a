"""maskgil_jax: MaskGIL (masked generative image LLaMA) in JAX/Flax, TPU first."""
import pathlib

from setuptools import find_packages, setup

ROOT = pathlib.Path(__file__).parent


def read_requirements():
  lines = (ROOT / "requirements.txt").read_text().splitlines()
  return [l.split("#")[0].strip() for l in lines if l.split("#")[0].strip()]


setup(
    name="maskgil_jax",
    version="0.1.0",
    description="MaskGIL and LlamaGen image generators in JAX/Flax NNX.",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["maskgil_jax", "maskgil_jax.*"]),
    package_data={"maskgil_jax.data": ["demo/*.npz", "demo/*.md"]},
    install_requires=read_requirements(),
    extras_require={
        # torch 2.13.0 CPU is the build the parity fixtures were made with; an open range would
        # pull a multi-GB CUDA build on machines that have no local wheel.
        "test": ["pytest>=8", "torch==2.13.0"],
    },
)
