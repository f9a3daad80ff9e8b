"""``stream-kt forget``: erases exactly one student's state in the real Redis, and says what it did."""

from __future__ import annotations

import asyncio

import pytest

from stream_kt.cli import main
from stream_kt.service import keys
from stream_kt.service.redis_store import StudentStore, redis_client_sync
from stream_kt.service.state import StudentState


def test_forget_deletes_one_students_state_and_is_fine_when_there_is_none(redis_url, key_prefix, capsys):
    async def write() -> None:
        store = await StudentStore.connect(redis_url, key_prefix)
        try:
            await store.write_blobs(
                ["alice", "bob"],
                [
                    StudentState("alice", "v1", events_applied=3).to_bytes(),
                    StudentState("bob", "v1", events_applied=5).to_bytes(),
                ],
                [3, 5],
            )
        finally:
            await store.close()

    asyncio.run(write())
    client = redis_client_sync(redis_url)
    alice, bob = keys.student_key("alice", key_prefix), keys.student_key("bob", key_prefix)
    try:
        assert main(["forget", "alice", "--redis", redis_url, "--key-prefix", key_prefix]) == 0
        first = capsys.readouterr().out
        assert f"forgot student alice: deleted {alice}" in first and "retention" in first
        assert client.exists(alice) == 0 and client.exists(bob) == 1  # only alice

        assert main(["forget", "alice", "--redis", redis_url, "--key-prefix", key_prefix]) == 0
        assert f"no state for student alice ({alice}" in capsys.readouterr().out
    finally:
        client.close()


def test_forget_help_says_kafka_retention_must_be_covered_too(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["forget", "--help"])
    assert exited.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert (
        "answer events stay in the input topic" in help_text and "must also cover those topics' retention" in help_text
    )
