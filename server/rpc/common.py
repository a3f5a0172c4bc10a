"""Small pieces every servicer needs: who is calling, and timestamps on the wire.

`caller(ctx, context)` is the caller that server/rpc/auth.py's interceptor verified (its
`current_principal` context variable); on a server built without that interceptor it reads the
`authorization` metadata itself through the same TokenService REST uses, so servicers behave the
same either way.
"""

from __future__ import annotations

from datetime import datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from server.context import AppContext
from server.domain.principal import Principal
from server.rpc.auth import current_principal


def caller(ctx: AppContext, context: grpc.aio.ServicerContext) -> Principal | None:
    """The authenticated caller, None without `authorization` metadata; a bad token raises."""
    verified = current_principal.get()
    if verified is not None:
        return verified
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            header = value.decode() if isinstance(value, bytes) else value
            return ctx.tokens.authenticate_header(header)
    return None


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp
