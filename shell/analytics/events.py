"""Analytics events: the catalogue of event types, and :class:`Emitter`, the synchronous front.

``emitter.emit("llm_call", "normal", provider="gemini", latency=0.8, tokens=412, status="ok")``
checks the event against :data:`EVENTS` (one dict lookup and two set
comparisons), counts it into the open aggregation window, samples it, and
puts it in one of three bounded queues (high, normal, low). It never awaits
and never touches the disk: the writer service (:mod:`shell.analytics.writer`)
takes batches from the queues and stores them.

Sampling thins only what is *stored*: every event, sampled out or not,
dropped or not, is counted in the aggregates, so totals stay exact. A stored
event carries its weight (1 / its sample rate).

The queues share one capacity. When they are full, the lowest priority goes
first: an incoming event evicts the newest queued event of the lowest
priority below its own, or, when nothing queued ranks below it, is dropped
itself. Every drop is counted per priority (of the event dropped). The
caller is never blocked.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from shell.analytics.aggregate import Aggregator

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SAMPLE_RATES",
    "EVENTS",
    "Emitter",
    "EventSpec",
    "Priority",
    "PriorityQueues",
    "QueuedEvent",
]


class Priority(enum.StrEnum):
    """How urgently an event must reach the database, and who is evicted first when full.

    A StrEnum: ``"high"`` and ``Priority.HIGH`` are interchangeable.
    """

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


LOWEST_FIRST = (Priority.LOW, Priority.NORMAL, Priority.HIGH)


@dataclass(frozen=True)
class EventSpec:
    """What one event type may carry and what it counts.

    ``fields``: the names allowed; ``required``: those that must be given;
    ``numbers``: names whose value must be a finite number >= 0 (``tokens``
    an int); ``texts``: names whose value must be a str (those stored in
    a column of their own); ``label``: the field stored in the ``label`` column and used to
    split the aggregates (None: no label); ``series``: the aggregate series
    the event adds to, each ``(metric, label_field or None, value_field or None)``.
    """

    fields: frozenset[str]
    required: frozenset[str]
    numbers: tuple[str, ...]
    texts: tuple[str, ...]
    label: str | None
    series: tuple[tuple[str, str | None, str | None], ...]


def _spec(fields: str, required: str = "", label: str | None = None, series=()) -> EventSpec:
    allowed = frozenset(fields.split()) | {"user_id", "guild_id"}
    return EventSpec(
        fields=allowed,
        required=frozenset(required.split()),
        numbers=tuple(name for name in ("latency", "tokens") if name in allowed),
        texts=tuple(name for name in (label, "status") if name in allowed),
        label=label,
        series=tuple(series),
    )


#: Every event type: the fields it may carry and the aggregate series it feeds.
#: ``user_id`` and ``guild_id`` are allowed everywhere; user ids are stored salted
#: and hashed. ``latency`` is in seconds.
EVENTS: Mapping[str, EventSpec] = {
    "message_processed": _spec("channel_id latency cached", series=[("messages", None, "latency")]),
    "command_used": _spec("command latency", "command", "command", [("commands", "command", None)]),
    "cache_hit": _spec("cache", "", "cache", [("cache_hits", "cache", None)]),
    "cache_miss": _spec("cache", "", "cache", [("cache_misses", "cache", None)]),
    "llm_call": _spec(
        "provider model latency tokens status",
        "provider latency tokens status",
        "provider",
        [("llm_latency", "provider", "latency"), ("llm_tokens", "provider", "tokens"), ("llm_status", "status", None)],
    ),
    "rate_limited": _spec("scope", "scope", "scope", [("rate_limited", "scope", None)]),
    "error": _spec("type hash where", "type", "type", [("errors", "type", None)]),
    "shed": _spec("reason", "", "reason", [("shed", "reason", None)]),
}

_NUMBER_CLASSES = {"latency": frozenset({int, float}), "tokens": frozenset({int})}
_NUMBER_TEXT = {"latency": "a finite number (int or float) >= 0", "tokens": "an int >= 0"}

#: Stored fraction per event type; types not named are stored in full (1.0).
DEFAULT_SAMPLE_RATES: Mapping[str, float] = {"cache_hit": 0.05, "cache_miss": 0.05}

#: A queued event: ``(posix_time, event_type, weight, fields)``.
QueuedEvent = tuple[float, str, float, dict]


class PriorityQueues:
    """Three FIFO queues (high, normal, low) sharing one capacity; see the module docs.

    ``dropped`` counts the events lost to a full capacity, by their priority.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity!r}")
        self.capacity = capacity
        self.size = 0
        self.dropped = dict.fromkeys(Priority, 0)
        self.queues: dict[Priority, deque[QueuedEvent]] = {priority: deque() for priority in Priority}

    def put(self, priority: Priority, event: QueuedEvent) -> bool:
        """Queue *event*; return False if it was dropped instead (counted)."""
        if self.size >= self.capacity:
            for lower in LOWEST_FIRST:
                if lower == priority:
                    self.dropped[priority] += 1
                    return False
                if self.queues[lower]:
                    self.queues[lower].pop()
                    self.dropped[lower] += 1
                    self.size -= 1
                    break
        self.queues[priority].append(event)
        self.size += 1
        return True

    def take(self, limit: int) -> list[QueuedEvent]:
        """Remove and return up to *limit* events: high ones first, each queue oldest first."""
        batch: list[QueuedEvent] = []
        for priority in (Priority.HIGH, Priority.NORMAL, Priority.LOW):
            queue = self.queues[priority]
            while queue and len(batch) < limit:
                batch.append(queue.popleft())
        self.size -= len(batch)
        return batch

    def oldest(self, priorities: Iterable[Priority] = tuple(Priority)) -> float | None:
        """The queue time of the oldest event among *priorities*, or None if they are empty."""
        heads = [self.queues[priority][0][0] for priority in priorities if self.queues[priority]]
        return min(heads, default=None)

    def purge(self, keep: Callable[[QueuedEvent], bool]) -> int:
        """Remove every queued event for which ``keep(event)`` is false; return how many."""
        removed = 0
        for queue in self.queues.values():
            kept = [event for event in queue if keep(event)]
            removed += len(queue) - len(kept)
            queue.clear()  # in place: the emitter holds these deques
            queue.extend(kept)
        self.size -= removed
        return removed


class Emitter:
    """Validates, counts, samples and queues events; :meth:`emit` is the whole hot path.

    ``aggregator`` receives every valid event; ``wall_clock()`` gives the POSIX
    time of an event (call :meth:`emit` from the Trio thread: the default
    clocks read ``trio.current_time()``). ``sample_rates`` maps event types to
    the fraction stored (0 < rate <= 1; missing types: 1.0). ``random_source`` is the
    sampling source, ``random.random`` by default; pass a seeded
    ``random.Random(...).random`` for repeatable runs. ``wake`` is called when
    the writer should look at the queues again (first event queued, first
    high event queued, or a full batch ready).

    Counters: ``emitted`` and ``sampled_out`` per event type, and the queues'
    ``dropped`` per priority.
    """

    def __init__(
        self,
        aggregator: Aggregator,
        wall_clock: Callable[[], float],
        *,
        sample_rates: Mapping[str, float] | None = None,
        capacity: int = 50_000,
        batch_size: int = 500,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        rates = dict(DEFAULT_SAMPLE_RATES if sample_rates is None else sample_rates)
        for event_type, rate in rates.items():
            if event_type not in EVENTS:
                raise ValueError(f"sample rate for unknown analytics event type {event_type!r}")
            if not 0 < rate <= 1:
                raise ValueError(f"sample rate for {event_type!r} must be in (0, 1], not {rate!r}")
        self.rates = {event_type: float(rates.get(event_type, 1.0)) for event_type in EVENTS}
        self.queues = PriorityQueues(capacity)
        self.batch_size = batch_size
        self.emitted = dict.fromkeys(EVENTS, 0)
        self.sampled_out = dict.fromkeys(EVENTS, 0)
        self.wake: Callable[[], None] = lambda: None
        self._aggregator = aggregator
        self._wall_clock = wall_clock
        self._random = random_source
        self._queue_of = {priority: self.queues.queues[priority] for priority in Priority}

    def emit(self, event_type: str, priority: str = Priority.NORMAL, /, **fields: object) -> None:
        """Record one event. Never awaits, never blocks, never touches the disk.

        Raises :class:`ValueError` (and records nothing) for an unknown event
        type or priority, a field the type does not allow, a missing required
        field, a ``latency``/``tokens`` that is not a finite number >= 0
        (``tokens``: an int), or a label or ``status`` that is not a str. An event dropped because the queues are full is
        counted, not raised.
        """
        spec = EVENTS.get(event_type)
        if spec is None:
            raise ValueError(f"unknown analytics event type {event_type!r}")
        if not fields.keys() <= spec.fields or not spec.required <= fields.keys():
            raise ValueError(_field_error(event_type, spec, fields))
        for name in spec.numbers:
            value = fields.get(name, 0)
            if value.__class__ not in _NUMBER_CLASSES[name] or not 0 <= value < math.inf:  # type: ignore[operator]
                raise ValueError(f"analytics event {event_type!r}: {name} must be {_NUMBER_TEXT[name]}, not {value!r}")
        for name in spec.texts:
            if not isinstance(fields.get(name, ""), str):
                raise ValueError(f"analytics event {event_type!r}: {name} must be a str, not {fields[name]!r}")
        queue = self._queue_of.get(priority)
        if queue is None:
            raise ValueError(f"unknown analytics priority {priority!r}; use one of {[p.value for p in Priority]}")
        now = self._wall_clock()
        self._aggregator.add(spec.series, fields, now)
        self.emitted[event_type] += 1
        rate = self.rates[event_type]
        if rate < 1.0 and self._random() >= rate:
            self.sampled_out[event_type] += 1
            return
        queues = self.queues
        if queues.put(priority, (now, event_type, 1.0 / rate, fields)):
            size = queues.size
            if size == 1 or size == self.batch_size or (len(queue) == 1 and priority == Priority.HIGH):
                self.wake()


def _field_error(event_type: str, spec: EventSpec, fields: Mapping[str, object]) -> str:
    unknown = sorted(fields.keys() - spec.fields)
    if unknown:
        return f"analytics event {event_type!r} has no field(s) {unknown}; allowed: {sorted(spec.fields)}"
    return f"analytics event {event_type!r} needs field(s) {sorted(spec.required - fields.keys())}"
