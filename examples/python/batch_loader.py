"""The seeds' batching consumer with a dead-letter queue, with Sluicegate: rows loaded in
batches of up to 100 (one insert per batch); a row that cannot be decoded fails its batch,
which the runtime bisects until that row alone goes to `rows.dlq`; the rest is loaded once.

    python examples/python/batch_loader.py
"""

import asyncio
import json

import sluicegate
from sluicegate.testing import EmbeddedKafka

ROWS = 1000

kafka = EmbeddedKafka()
kafka.create_topic("rows", 4)
rows = [json.dumps({"id": i, "value": i * 3}) for i in range(ROWS)]
rows[417] = "{truncated"
kafka.produce("rows", rows)

consumer = sluicegate.Consumer(
    bootstrap_servers=kafka.bootstrap_servers, group_id="loader", topics=["rows"],
    retry=sluicegate.Retry(max_attempts=2, initial_backoff=0.01), dead_letter=True,
)
table = {}


@consumer.batch_handler(max_messages=100, max_wait=0.05)
async def load(batch: list) -> None:
    decoded = [msg.json() for msg in batch]  # DecodeError fails the whole batch
    table.update((row["id"], row["value"]) for row in decoded)  # one "insert" per batch


async def main() -> None:
    running = asyncio.create_task(consumer.run())
    while sum(consumer.status()["committed"].values()) < ROWS:
        await asyncio.sleep(0.05)
    consumer.shutdown()
    await running
    print(f"loaded {len(table)} rows, {consumer.status()['dead_lettered']} dead-lettered to rows.dlq")


asyncio.run(main())
