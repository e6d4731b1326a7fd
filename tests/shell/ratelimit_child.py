"""Child process for test_ratelimit's crash tests: ``python ratelimit_child.py STATE_FILE``.

Runs a Runtime (real clock, signals handled) with a RateLimiter writing
behind to STATE_FILE every WRITE_INTERVAL seconds, and an acquirer that
spends one fairness message for a new user ``u<n>`` at a time, n = 0, 1, 2 ...
continuing after the users found in the loaded state. So the state file's
user count is the number of acquisitions it holds, and a consistent file
holds exactly the users u0 .. u<count-1>.

Prints, flushed, one line per event:

- ``ready N``: state loaded, N users in it; acquisitions start.
- ``acquired N``: after each batch, N users acquired so far. A write-behind
  snapshot is taken between batches, so it never holds more than the last
  ``acquired`` line printed.
- ``written N``: a write holding N users has completed (printed from the
  writer thread once the file is in place).
- ``final N``: after a clean stop (SIGTERM/SIGINT) and the final flush, N users.
"""

from __future__ import annotations

import logging
import sys
import threading

import trio

from shell.ratelimit import RateLimiter, RateLimits
from shell.service import Runtime, Service
from shell.statefile import StateFile

WRITE_INTERVAL = 0.2
BATCH = 10  # acquisitions between pauses
PAUSE = 0.005  # seconds; about 2000 acquisitions a second
LIMITS = RateLimits(max_users=1_000_000)  # each user acquires once: the default quotas never refuse


_output = threading.Lock()  # lines come from the Trio thread and the writer's worker thread


def report(line: str) -> None:
    """Print one whole line, flushed, never interleaved with another."""
    with _output:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def users_in(data: bytes) -> int:
    """How many users a RateLimiter snapshot holds."""
    probe = RateLimiter(LIMITS)
    probe.restore(data)
    return probe.stats()["users"]


class ReportingStateFile(StateFile):
    """A StateFile that announces each completed write with the user count it holds."""

    def write(self, data: bytes) -> None:
        super().write(data)
        report(f"written {users_in(data)}")


class Acquirer(Service):
    name = "acquirer"
    depends_on = ("ratelimit",)

    def __init__(self, limiter: RateLimiter) -> None:
        super().__init__()
        self.limiter = limiter

    async def run(self, task_status=trio.TASK_STATUS_IGNORED):
        acquired = self.limiter.stats()["users"]
        report(f"ready {acquired}")
        task_status.started()
        while True:
            for _ in range(BATCH):
                decision = self.limiter.check_fairness(f"u{acquired}")
                if not decision.allowed:
                    raise RuntimeError(f"refused: {decision}")
                acquired += 1
            report(f"acquired {acquired}")
            await trio.sleep(PAUSE)


async def main(path: str) -> None:
    limiter = RateLimiter(LIMITS, state_file=ReportingStateFile(path), write_interval=WRITE_INTERVAL)
    await Runtime([limiter, Acquirer(limiter)], stop_deadline=20).run()
    report(f"final {limiter.stats()['users']}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    trio.run(main, sys.argv[1])
