"""The seeds' KafkaSubscriber, with Sluicegate: native async iteration over a topic, each
message finished when the loop body ends without raising, commits of finished work only.

    python examples/python/subscriber.py                  # against a broker in the process
    python examples/python/subscriber.py localhost:9092   # or your own (topic `events`)
"""

import asyncio
import json
import sys

import sluicegate
from sluicegate.testing import EmbeddedKafka

COUNT = 500


async def main(bootstrap: str) -> None:
    consumer = sluicegate.Consumer(
        bootstrap_servers=bootstrap, group_id="subscriber-example", topics=["events"]
    )
    seen = 0
    async for msg in consumer.messages():  # until SIGINT/SIGTERM or shutdown()
        event = msg.json()
        seen += 1
        if seen == COUNT:
            consumer.shutdown()  # the loop ends once the work in flight is committed
    print(f"handled {seen} events, last {event['type']} #{event['id']}; all committed")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:
        kafka = EmbeddedKafka()
        kafka.create_topic("events", 3)
        kafka.produce("events", [json.dumps({"id": i, "type": "click"}) for i in range(COUNT)])
        asyncio.run(main(kafka.bootstrap_servers))
