"""Sample-quality metrics as ADM's evaluator defines them, computed with JAX on the accelerators.

features.py (sharded FID Inception forward), fid.py (FID / sFID), inception_score.py,
precision_recall.py, image_sets.py (ADM .npz batches and image folders), stats_io.py (statistics
files), sample_store.py (resumable storage of generated sample sets). The command is
`python -m maskgil_jax.evaluate`; docs/evaluation.md gives the protocol.
"""
