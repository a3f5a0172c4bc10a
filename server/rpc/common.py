"""Small pieces every servicer needs on the wire (timestamps). Who is calling is
server/rpc/auth.py's `current_principal`, set by its interceptor, which also checks access."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp
