"""A consumer whose side effect is a ledger file: one line ``PARTITION OFFSET UNIX_TIME`` per
message, written before its handler returns. Run by test_process.py, which stops it with SIGTERM or
SIGKILL and checks the ledger against what the group committed.

    python ledger_consumer.py BOOTSTRAP TOPIC GROUP LEDGER WORK_SECONDS
"""

import asyncio
import os
import sys
import time

import sluicegate


def main() -> None:
    bootstrap, topic, group, ledger, work = sys.argv[1:6]
    consumer = sluicegate.Consumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        topics=[topic],
        ordering="key",
        max_in_flight=16,
        commit_interval=0.2,
        config={"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"},
    )
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @consumer.handler
    async def handle(msg: sluicegate.Message) -> None:
        await asyncio.sleep(float(work))
        os.write(fd, f"{msg.partition} {msg.offset} {time.time()}\n".encode())

    asyncio.run(consumer.run())
    print("stopped; finished work committed", flush=True)


if __name__ == "__main__":
    main()
