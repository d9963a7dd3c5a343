"""The seeds' AsyncResilientKafkaConsumer (`consume_messages(process_message)`, where the
processor returns False to have a message retried), with Sluicegate: the retries with back-off,
reconnection and commits are the runtime's; a message keeps its place in its key while it is
retried.

    python examples/python/resilient.py
"""

import asyncio
import collections
import json

import sluicegate
from sluicegate.testing import EmbeddedKafka

ORDERS = 300

kafka = EmbeddedKafka()
kafka.create_topic("orders", 4)
kafka.produce(
    "orders", [(f"customer-{i % 20}", json.dumps({"id": i, "customer": i % 20})) for i in range(ORDERS)]
)

consumer = sluicegate.Consumer(
    bootstrap_servers=kafka.bootstrap_servers, group_id="resilient", topics=["orders"],
    ordering="key", retry=sluicegate.Retry(initial_backoff=0.01, max_backoff=0.1),
)
attempts = collections.Counter()
order_of = collections.defaultdict(list)


@consumer.handler
async def process_message(msg: sluicegate.Message) -> bool:
    order = msg.json()
    attempts[order["id"]] += 1
    if order["id"] % 50 == 7 and attempts[order["id"]] < 3:
        return False  # a downstream hiccup: retried with back-off, later orders of the customer wait
    order_of[order["customer"]].append(order["id"])
    return True


async def main() -> None:
    running = asyncio.create_task(consumer.run())
    while sum(consumer.status()["committed"].values()) < ORDERS:
        await asyncio.sleep(0.05)
    consumer.shutdown()
    await running
    in_order = all(ids == sorted(ids) for ids in order_of.values())
    retried = sum(1 for n in attempts.values() if n > 1)
    print(f"processed {sum(map(len, order_of.values()))} orders, {retried} after retries, "
          f"in order per customer: {in_order}")


asyncio.run(main())
