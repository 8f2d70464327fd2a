"""PyTorch interop: reading torch checkpoints safely and the name tables that map them."""
