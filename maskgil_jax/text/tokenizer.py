"""T5 tokenization with the `sentencepiece` package, equal to Hugging Face's T5 tokenizer with
`max_length=L, padding='max_length', truncation=True` (docs/reference.md section 8).

A prompt becomes its SentencePiece pieces, truncated to L - 1 so that `</s>` (id 1) always
ends it, then 0-padded (the pad id) to L; the mask is 1 on the pieces and `</s>`. A prompt
that had to be cut is reported with a warning naming its token count, since the image is then
conditioned on less than was asked.
"""
from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from maskgil_jax.interop.torch_io import CheckpointError

PAD_ID, EOS_ID = 0, 1
MODEL_FILE = "spiece.model"


class T5Tokenizer:
  def __init__(self, folder: str | os.PathLike):
    path = pathlib.Path(folder) / MODEL_FILE
    if not path.is_file():
      raise CheckpointError(f"{folder}: no {MODEL_FILE} (the T5 SentencePiece model)")
    import sentencepiece
    self.sp = sentencepiece.SentencePieceProcessor(model_file=str(path))

  def __call__(self, prompts: Sequence[str], max_length: int = 120
               ) -> tuple[np.ndarray, np.ndarray]:
    """(int32 ids [N, max_length], int32 mask [N, max_length]) of `prompts`."""
    if max_length < 2:
      raise ValueError(f"max_length {max_length}: needs room for a piece and </s>")
    ids = np.full((len(prompts), max_length), PAD_ID, np.int32)
    mask = np.zeros((len(prompts), max_length), np.int32)
    for i, prompt in enumerate(prompts):
      pieces = self.sp.encode(prompt)
      if len(pieces) + 1 > max_length:
        logging.warning("prompt %d has %d tokens with </s>; only the first %d are used "
                        "(text.max_length): %r", i, len(pieces) + 1, max_length,
                        prompt[:80])
        pieces = pieces[:max_length - 1]
      row = list(pieces) + [EOS_ID]
      ids[i, :len(row)] = row
      mask[i, :len(row)] = 1
    return ids, mask
