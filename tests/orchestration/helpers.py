"""Small helpers shared by the orchestration tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from dagster import (
    AddDynamicPartitionsRequest,
    DagsterInstance,
    DeleteDynamicPartitionsRequest,
    RunRequest,
)

START, END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def ranges(requests: Sequence[RunRequest] | None) -> list[tuple[str, str]]:
    """The symbol range of each run request."""
    return [(r.tags[START], r.tags[END]) for r in requests or []]


def apply_partition_requests(
    instance: DagsterInstance,
    requests: Sequence[AddDynamicPartitionsRequest | DeleteDynamicPartitionsRequest],
) -> None:
    """What the sensor daemon does with a tick's partition requests, before its runs launch."""
    for request in requests:
        if isinstance(request, AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


class Tick(Protocol):
    """What a schedule's ``evaluate_tick`` returns, as far as the tests read it."""

    @property
    def run_requests(self) -> Sequence[RunRequest] | None: ...

    @property
    def skip_message(self) -> str | None: ...


class SensorTick(Tick, Protocol):
    """A sensor's tick also asks for partitions to be added or removed."""

    @property
    def dynamic_partitions_requests(
        self,
    ) -> Sequence[AddDynamicPartitionsRequest | DeleteDynamicPartitionsRequest] | None: ...
