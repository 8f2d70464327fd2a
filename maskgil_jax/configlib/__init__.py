"""The config tree: presets defined once, the base tree, validation and loading.

Experiment files in the top-level `configs/` folder build their `get_config()` from these
helpers; the entry points load a file (plus `--config.a.b=value` overrides) and call
`finalize`, which checks every field and computes the derived values.
"""
from maskgil_jax.configlib.base import base_config
from maskgil_jax.configlib.finalize import ConfigError, finalize
from maskgil_jax.configlib.load import load_config
from maskgil_jax.configlib.model import MODEL_SIZES, LAYOUTS, model_config
from maskgil_jax.configlib.tokenizer import TOKENIZER_PRESETS, tokenizer_config

__all__ = ["base_config", "ConfigError", "finalize", "load_config", "MODEL_SIZES", "LAYOUTS",
           "model_config", "TOKENIZER_PRESETS", "tokenizer_config"]
