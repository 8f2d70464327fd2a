"""Neural networks: the one LLaMA transformer, the VQ tokenizer, and the evaluation networks."""
