"""Experiment files. Installed as the package `maskgil_jax.configs`, so `--config NAME` (e.g.
`--config maskgil:B` or `--config demo:generator`) finds them after `pip install .` from any
folder; in a checkout, `--config configs/NAME.py` works as well."""
