"""bench/versus_torch.py runs each generator workload on both sides (tiny models) and reports
medians and their ratio; the PyTorch twin it times holds the same weights as our model."""
import pathlib
import re
import sys

import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import versus_torch  # noqa: E402


def test_twin_holds_our_weights_and_computes_our_logits():
  config = versus_torch.generator_config("tiny", "llamagen")
  model = versus_torch.random_transformer(config)
  twin = versus_torch.torch_twin(model, config)
  tokens, labels = np.arange(8, dtype=np.int32)[None] % 7, np.array([3], np.int32)
  ours = np.asarray(model.ar_logits(tokens, labels))
  with torch.no_grad():
    theirs = twin.ar_logits(torch.from_numpy(tokens).long(), torch.from_numpy(labels).long())
  np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4, rtol=0)
  assert np.abs(ours).max() > 0  # the random head: not the zero-initialised one


def test_each_workload_prints_both_medians_and_their_ratio(capsys):
  assert versus_torch.main(["--sizes", "tiny", "--workloads", "ar1,mar,train",
                            "--rounds", "1", "--threads", "1"]) == 0
  out = capsys.readouterr().out
  rows = re.findall(r"^(.+?)\s+tiny\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+([\d.]+)$", out, re.M)
  assert len(rows) == 3, out
  for _, theirs, ours, ratio, compile_s in rows:
    assert float(theirs) > 0 and float(ours) > 0 and float(ratio) > 0
    if float(ours) >= 0.5:  # printed with 2 decimals: check the ratio where rounding is small
      assert abs(float(ratio) - float(theirs) / float(ours)) < 0.05 * float(ratio)
  assert "remat policy none (auto)" in out
  assert "versus_torch: ar1-tiny" in out
