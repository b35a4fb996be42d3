"""Reading back the scalars a run wrote to TensorBoard (tensorboardX event files), without TensorBoard itself."""
from __future__ import annotations

import struct
from pathlib import Path

# TFRecord framing of an event file: an 8-byte length, a 4-byte CRC of it, the Event proto, a 4-byte CRC of it.
LENGTH_BYTES, CRC_BYTES = 8, 4


def read_scalars(event_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from every events.out.tfevents.* file of `event_dir`, in file order."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(event_dir).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset + LENGTH_BYTES + CRC_BYTES <= len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + LENGTH_BYTES])
            start = offset + LENGTH_BYTES + CRC_BYTES
            if start + length + CRC_BYTES > len(data):
                break  # a record still being written by a live run
            event = event_pb2.Event.FromString(data[start:start + length])
            offset = start + length + CRC_BYTES
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars
