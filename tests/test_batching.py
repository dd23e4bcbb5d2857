import numpy as np
import pytest

from rnnembed.batching import Batcher


def lengths(texts):
    return np.array([[len(t)] for t in texts], dtype=np.float32)


@pytest.mark.parametrize("limit", ["max_batch_tokens", "max_batch_requests", "max_queue"])
def test_limits_below_one_are_refused(limit):
    with pytest.raises(ValueError, match="must be >= 1"):
        Batcher(lengths, **{limit: 0})


def test_a_failing_observer_does_not_stop_the_worker():
    def observe(batch):
        raise RuntimeError("metrics broke")

    batcher = Batcher(lengths, on_batch=observe)
    batcher.start()
    try:
        for texts in (["a", "bb"], ["ccc"]):  # the second is answered after the first fails
            rows = batcher.submit(texts, tokens=len(texts)).result(timeout=10)
            assert rows[:, 0].tolist() == [len(t) for t in texts]
    finally:
        batcher.close()
