"""C-GET negotiation as a pure function: the retry of a study split by series."""

from __future__ import annotations

from dicomiso_retriever.negotiation import BUDGET, COMPRESSED, plan, retry_plan


def _split_study() -> tuple[dict[str, dict[str, str | None]], list[str]]:
    """140 private SOP classes, 70 per series, one instance each."""
    classes = [f"1.2.826.0.1.3680043.8.498.77.{k}" for k in range(1, 141)]
    by_series: dict[str, dict[str, str | None]] = {
        "1.2.3.1": {f"1.2.3.1.{k}": c for k, c in enumerate(classes[:70])},
        "1.2.3.2": {f"1.2.3.2.{k}": c for k, c in enumerate(classes[70:])},
    }
    return by_series, classes


def test_a_split_study_is_retried_only_for_the_series_that_failed() -> None:
    """An instance of series 2 failed for lack of a compressed context: the retry fetches
    series 2 alone, proposing every compressed syntax for the failed class, and never the
    whole study on one association (where 14 of the 140 classes could not be proposed)."""
    by_series, classes = _split_study()
    first = plan(classes, by_series)
    assert [series for _, series in first.associations] == [["1.2.3.1"], ["1.2.3.2"]]
    offered = {(c, tuple(ts)) for cx, _ in first.associations for c, ts in cx}
    # a class of series 2 for which no compressed context fitted the first time
    failed = next(c for c in classes[70:] if not any((c, (ts,)) in offered for ts in COMPRESSED))

    series_two = {c for c in by_series["1.2.3.2"].values() if c}
    retry = retry_plan(first, {failed}, {"1.2.3.2": series_two})

    assert retry is not None
    assert [series for _, series in retry.associations] == [["1.2.3.2"]]
    contexts = retry.associations[0][0]
    assert len(contexts) <= BUDGET
    assert {c for c, _ in contexts} == series_two
    assert all((failed, [ts]) in contexts for ts in COMPRESSED)
