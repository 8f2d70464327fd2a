"""maskgil_jax: MaskGIL and LlamaGen image generators in JAX / Flax NNX.

Importing the package switches Flax NNX to tree mode once, for the whole program: modules are
plain pytrees of parameters that jitted functions take and return, and nothing mutates during a
call. Variables are not sharded when created (that needs a mesh at construction time); the
trainer places them through `maskgil_jax.parallel.rules` instead.
"""
import flax
from flax import nnx

__version__ = "0.1.0"

flax.config.update("nnx_graph_mode", False)  # every thread, including data-loader threads
flax.config.update("flax_always_shard_variable", False)
nnx.set_graph_mode(False)
