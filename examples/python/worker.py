"""The seeds' worker with an output producer (Pythia's `OrderProcessorWithOutput`: process an
order, send the result to `processed-orders`), with Sluicegate: the handler awaits each send, so
an order is committed only once its result is acknowledged by the broker; a failed send retries
the order. No producer to set up or close: it is the consumer's.

    python examples/python/worker.py
"""

import asyncio
import json

import sluicegate
from sluicegate.testing import EmbeddedKafka

ORDERS = 500

kafka = EmbeddedKafka()
kafka.create_topic("orders", 4)
kafka.create_topic("processed-orders", 4)
kafka.produce(
    "orders",
    [(f"order-{i}", json.dumps({"order_id": i, "items": 1 + i % 5, "price": 250})) for i in range(ORDERS)],
)

consumer = sluicegate.Consumer(
    bootstrap_servers=kafka.bootstrap_servers, group_id="order-processor", topics=["orders"],
    ordering="key", max_in_flight=10, retry=sluicegate.Retry(max_attempts=5), dead_letter=True,
)
out = consumer.output()  # before run(): the consumer's producer, shared by every handler call


@consumer.handler
async def process_message(msg: sluicegate.Message) -> None:
    order = msg.json()
    result = {"order_id": order["order_id"], "total": order["items"] * order["price"]}
    # Returns (partition, offset) once acknowledged; raises OutputError (retried) otherwise.
    await out.send("processed-orders", json.dumps(result), key=str(order["order_id"]),
                   headers={"source": f"{msg.topic}/{msg.partition}/{msg.offset}"})


# Reads the results back, as the next service would.
audit = sluicegate.Consumer(
    bootstrap_servers=kafka.bootstrap_servers, group_id="audit", topics=["processed-orders"],
)
results = {}


@audit.handler
async def record(msg: sluicegate.Message) -> None:
    results[msg.json()["order_id"]] = dict(msg.headers)["source"].decode()


async def main() -> None:
    workers = [asyncio.create_task(consumer.run()), asyncio.create_task(audit.run())]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while (len(results) < ORDERS or sum(consumer.status()["committed"].values()) < ORDERS) \
            and loop.time() < deadline:
        await asyncio.sleep(0.05)
    consumer.shutdown()
    audit.shutdown()
    await asyncio.gather(*workers)
    committed = sum(consumer.status()["committed"].values())
    print(f"processed {committed} orders, {len(results)} results read back from processed-orders")


asyncio.run(main())
