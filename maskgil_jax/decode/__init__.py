"""Decoders over the one transformer: MAR confidence masking, AR with a KV cache, and hybrid."""
