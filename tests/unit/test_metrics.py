"""The hot-path metrics read into /metrics at scrape time (SPEC §4, callroom.metrics)."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from callroom.metrics import HotHistogram, Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by name and labels: what a scraper reads."""
    text = metrics.render().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_value_on_a_bound_counts_in_that_bucket_and_buckets_are_cumulative() -> None:
    histogram = HotHistogram((0.5, 0.1, 1.0))  # any order: sorted
    for value in (0.1, 0.05, 0.5, 0.7, 2.0, 0.1):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 3), ("0.5", 4), ("1.0", 5), ("+Inf", 6)]
    assert histogram.sum == 0.1 + 0.05 + 0.5 + 0.7 + 2.0 + 0.1


def test_hot_metrics_are_exposed_as_prometheus_counters_and_a_histogram() -> None:
    metrics = Metrics()
    before = samples(metrics)
    assert before[("callroom_messages_received_total", (("event", "add_chat"),))] == 0
    assert before[("callroom_message_handling_seconds_count", ())] == 0
    assert before[("callroom_messages_sent_total", ())] == 0

    metrics.received_by_event["add_chat"].inc()
    metrics.received_by_event["add_chat"].inc()
    metrics.received_by_event["unknown"].inc()
    metrics.message_seconds.observe(0.0003)
    metrics.message_seconds.observe(0.7)
    metrics.messages_sent.inc(10)

    after = samples(metrics)
    assert after[("callroom_messages_received_total", (("event", "add_chat"),))] == 2
    assert after[("callroom_messages_received_total", (("event", "unknown"),))] == 1
    assert after[("callroom_messages_received_total", (("event", "offer"),))] == 0
    assert after[("callroom_message_handling_seconds_bucket", (("le", "0.00025"),))] == 0
    assert after[("callroom_message_handling_seconds_bucket", (("le", "0.0005"),))] == 1
    assert after[("callroom_message_handling_seconds_bucket", (("le", "0.5"),))] == 1
    assert after[("callroom_message_handling_seconds_bucket", (("le", "+Inf"),))] == 2
    assert after[("callroom_message_handling_seconds_count", ())] == 2
    assert after[("callroom_message_handling_seconds_sum", ())] == 0.0003 + 0.7
    assert after[("callroom_messages_sent_total", ())] == 10


async def test_the_task_gauge_counts_the_running_loops_unfinished_tasks() -> None:
    metrics = Metrics()
    here = samples(metrics)[("callroom_asyncio_tasks", ())]
    assert here >= 1  # this test's own task
    stop = asyncio.Event()
    waiters = [asyncio.create_task(stop.wait()) for _ in range(5)]
    assert samples(metrics)[("callroom_asyncio_tasks", ())] == here + 5
    stop.set()
    await asyncio.gather(*waiters)
    assert samples(metrics)[("callroom_asyncio_tasks", ())] == here


def test_the_task_gauge_is_zero_outside_an_event_loop() -> None:
    assert samples(Metrics())[("callroom_asyncio_tasks", ())] == 0
