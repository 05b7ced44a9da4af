"""Metrics logged as they come: every value reaches the tracker once, in batches of ``every`` epochs."""

from __future__ import annotations

from tasks.tracking.metric_stream import MetricStream


class _Recorder:
    """Stands in for the tracker's ``log_metrics``: keeps each batch it is given."""

    def __init__(self) -> None:
        self.batches: list[list] = []

    def log_metrics(self, run_id: str, metrics: list) -> None:
        self.batches.append([(run_id, m.key, m.value, m.step) for m in metrics])


def test_values_go_in_batches_of_every_epochs_and_the_rest_on_flush():
    recorder = _Recorder()
    stream = MetricStream(recorder, "run-1", every=25)
    for epoch in range(1, 61):
        stream(epoch, {"train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch})
    assert [len(b) for b in recorder.batches] == [50, 50]  # epochs 1-25, 26-50: two values each
    stream.flush()
    assert [len(b) for b in recorder.batches] == [50, 50, 20]
    logged = [row for batch in recorder.batches for row in batch]
    assert sorted((k, s) for _, k, _, s in logged) == sorted(
        (k, e) for e in range(1, 61) for k in ("train_loss", "val_loss")
    )
    assert all(v == (1.0 if k == "train_loss" else 2.0) / s for _, k, v, s in logged)
    stream.flush()  # nothing pending: nothing sent
    assert len(recorder.batches) == 3
