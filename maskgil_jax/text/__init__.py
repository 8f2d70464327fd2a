"""Prompts to caption features: T5 tokenization (`tokenizer.py`) and the encoder folder
(`encoder.py`: load FLAN-T5, encode prompts, LlamaGen's left padding)."""
