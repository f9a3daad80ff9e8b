"""Data layer: readers, vocabulary, splits, windows and next-step batches.

Nothing here imports torch, Kafka or Redis except ``batches`` (torch tensors).
"""

from stream_kt.data.readers import read_dataset
from stream_kt.data.sequences import StudentSequence

__all__ = ["StudentSequence", "read_dataset"]
