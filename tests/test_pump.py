"""The batch pump (parallel/pump.py): static padding, one batch dispatched ahead of the host,
in order, and the batch in flight collected when asked even if an exception arrives."""
import numpy as np
import pytest

from maskgil_jax.parallel.pump import ahead, padded, pump, slices


def test_padding_and_slices_keep_every_row_once():
  x = np.arange(6).reshape(3, 2)
  np.testing.assert_array_equal(padded(x, 5), [[0, 1], [2, 3], [4, 5], [0, 0], [0, 0]])
  np.testing.assert_array_equal(padded(x, 5, "edge")[3:], [[4, 5], [4, 5]])
  assert padded(x, 3) is x
  with pytest.raises(ValueError, match="fill 'nan'"):
    padded(x, 4, "nan")
  assert slices(10, 4) == [(0, 4), (4, 4), (8, 2)]
  assert slices(0, 4) == []


def test_each_batch_is_collected_after_the_next_is_dispatched():
  events = []
  pump(lambda i: events.append(("dispatch", i)) or i * 10, range(3),
       lambda i, r: events.append(("collect", i, r)))
  assert events == [("dispatch", 0), ("dispatch", 1), ("collect", 0, 0), ("dispatch", 2),
                    ("collect", 1, 10), ("collect", 2, 20)]
  order = []
  fetched = list(ahead(lambda i: order.append(i) or i + 1, range(3),
                       lambda i, r: (i, r, len(order))))
  assert fetched == [(0, 1, 2), (1, 2, 3), (2, 3, 3)]


@pytest.mark.parametrize("on_error, collected", [(True, [0, 1]), (False, [0])])
def test_an_interruption_keeps_or_drops_the_batch_in_flight(on_error, collected):
  done = []

  def dispatch(i):
    if i == 2:
      raise KeyboardInterrupt
    return i

  with pytest.raises(KeyboardInterrupt):
    pump(dispatch, range(4), lambda i, r: done.append(i), collect_on_error=on_error)
  assert done == collected
