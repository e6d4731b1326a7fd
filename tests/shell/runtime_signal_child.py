"""Child process for test_service's signal test: ``python runtime_signal_child.py FLUSH_FILE``.

Runs a Runtime (signals handled) with a store whose flush writes FLUSH_FILE,
prints "ready" once every service is READY, and exits 0 after a clean stop.
"""

from __future__ import annotations

import logging
import sys

import trio

from shell.service import Runtime, Service
from shell.timers import TimerWheel


class FileStore(Service):
    name = "store"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.stopped = False

    async def run(self, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.stopped = True

    async def flush(self):
        state = "after stop" if self.stopped else "while running"
        await trio.Path(self.path).write_text(f"flushed {state}\n")


class Announcer(Service):
    name = "announcer"
    depends_on = ("store", "timers")

    async def run(self, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        print("ready", flush=True)
        await trio.sleep_forever()


async def main(path: str) -> None:
    await Runtime([FileStore(path), TimerWheel(), Announcer()], stop_deadline=10).run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    trio.run(main, sys.argv[1])
