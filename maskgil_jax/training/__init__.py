"""Training pieces used by `maskgil_jax.train`: state, optimizer, losses, steps, metrics."""
