"""The hand-written loop stream-kt is measured against: the same parts, no framework.

What a careful person writes in an afternoon to serve a DKT from Kafka, and nothing
more: aiokafka ``getmany`` -> ``msgpack.unpackb`` per event -> one Redis ``MGET`` -> one
LSTM-cell step over the batch per round (a student's k-th event of the poll is in round
k, so each student's events apply in order) -> one pipelined ``SET`` -> a ``send`` per
output -> commit.  A student's state is its (h, c) rows and event count as raw float32
bytes; outputs carry the mastery as packed float32 bytes (as stream-kt's v2 messages).

Left out, as such a loop leaves them out: validation beyond a decodable map, dead
letters, replay skipping after a crash, fencing, model upgrades, retries, metrics.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import numpy as np
import redis.asyncio as aioredis
import torch
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream_kt.checkpoint import Checkpoint
from stream_kt.models.dkt import DKT


class HandwrittenLoop:
    def __init__(
        self,
        checkpoint: Checkpoint,
        bootstrap: str,
        redis_url: str,
        in_topic: str,
        out_topic: str,
        group: str,
        key_prefix: str,
        batch: int,
    ) -> None:
        model = checkpoint.model
        if not isinstance(model, DKT) or model.config.num_layers != 1:
            raise SystemExit("the hand-written loop serves a one-layer DKT")
        self.model, self.version, self.index = (
            model.eval(),
            checkpoint.version,
            {item: i for i, item in enumerate(checkpoint.vocab.ids)},
        )
        self.hidden, self.num_items = model.config.hidden_size, model.config.num_items
        self.cell = torch.nn.LSTMCell(model.config.embed_dim, self.hidden)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(self.cell, name).copy_(getattr(model.lstm, f"{name}_l0"))
        for parameter in (*self.model.parameters(), *self.cell.parameters()):
            parameter.requires_grad_(False)  # a no_grad decorator would not cover an async method's body
        self.consumer = AIOKafkaConsumer(
            in_topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=25,
        )
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self.redis = aioredis.Redis.from_url(redis_url)
        self.out_topic, self.prefix, self.batch = out_topic, key_prefix, batch
        self.events_in = self.outputs = 0

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()
        while not self.consumer.assignment():  # joined the group
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.producer.stop()
        await self.redis.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batches = await self.consumer.getmany(timeout_ms=5, max_records=self.batch)
            if batches:
                await self.handle([record for records in batches.values() for record in records])
                await self.consumer.commit()

    async def handle(self, records: list[Any]) -> None:
        events = []
        for record in records:
            event = msgpack.unpackb(record.value)
            item = self.index.get(str(event["skill_id"]))
            if item is not None:
                events.append((str(event["student_id"]), item, int(event["correct"]), event["ts"]))
        self.events_in += len(records)
        students = list(dict.fromkeys(e[0] for e in events))
        row_of = {s: n for n, s in enumerate(students)}
        stored = await self.redis.mget([f"{self.prefix}:hw:{s}" for s in students])
        width = 2 * self.hidden
        state = np.zeros((len(students), width + 2), np.float32)  # h, c, then the event count as two float32 words
        for n, blob in enumerate(stored):
            if blob is not None:
                state[n] = np.frombuffer(blob, np.float32)
        counts = state[:, width:].copy().view(np.int64)[:, 0]
        h, c = torch.from_numpy(state[:, : self.hidden]), torch.from_numpy(state[:, self.hidden : width])
        rounds: list[list[tuple[str, int, int, int]]] = []
        seen: dict[str, int] = {}
        for event in events:
            k = seen.get(event[0], 0)
            seen[event[0]] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(event)
        sends = []
        for round_events in rounds:
            rows = torch.tensor([row_of[e[0]] for e in round_events])
            items = torch.tensor([e[1] for e in round_events])
            correct = torch.tensor([e[2] for e in round_events])
            h0, c0 = h[rows], c[rows]
            p_correct = torch.sigmoid((h0 * self.model.out.weight[items]).sum(-1) + self.model.out.bias[items])
            h1, c1 = self.cell(self.model.embed(items + self.num_items * correct), (h0, c0))
            mastery = torch.sigmoid(self.model.out(h1)).numpy()
            h[rows], c[rows] = h1, c1
            for n, (student, _, _, ts) in enumerate(round_events):
                counts[row_of[student]] += 1
                message = {
                    "v": 2,
                    "student_id": student,
                    "seq": int(counts[row_of[student]]),
                    "ts": ts,
                    "model_version": self.version,
                    "p_correct": float(p_correct[n]),
                    "mastery": mastery[n].tobytes(),
                    "dtype": "f4",
                }
                sends.append(await self.producer.send(self.out_topic, msgpack.packb(message), key=student.encode()))
        state[:, : self.hidden], state[:, self.hidden : width] = h.numpy(), c.numpy()
        state[:, width:] = counts.view(np.float32).reshape(-1, 2)
        pipe = self.redis.pipeline(transaction=False)
        for n, student in enumerate(students):
            pipe.set(f"{self.prefix}:hw:{student}", state[n].tobytes())
        await pipe.execute()
        await asyncio.gather(*sends)
        self.outputs += len(sends)
