"""Round trip through Sluice with kafka-python, an independent Kafka client.

Creates a topic with the admin client, produces keyed records with headers,
reads them back, and prints one line per record plus a summary, which the
Rust integration test compares exactly.
"""
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
admin.create_topics([NewTopic(name=topic, num_partitions=2, replication_factor=1)])
admin.close()

# Idempotent producers need InitProducerId, which this broker does not serve yet.
producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, enable_idempotence=False)
futures = []
for i in range(count):
    futures.append(producer.send(
        topic,
        key=f"k{i}".encode(),
        value=f"v{i}".encode(),
        headers=[("n", str(i).encode())],
        partition=i % 2,
        timestamp_ms=1_600_000_000_000 + i,
    ))
producer.flush(timeout=30)
for f in futures:
    f.get(timeout=30)
producer.close()

consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000)
partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
consumer.assign(partitions)
consumer.seek_to_beginning(*partitions)
seen = []
deadline = time.time() + 60
while len(seen) < count and time.time() < deadline:
    for batch in consumer.poll(timeout_ms=500).values():
        for m in batch:
            seen.append((m.partition, m.offset, m.key.decode(), m.value.decode(),
                         [(k, v.decode()) for k, v in m.headers], m.timestamp))
consumer.close()
for s in sorted(seen):
    print(*s)
print("total", len(seen))
