"""moto's S3 server with a rule of S3 that moto lacks: user metadata is at most 2 KB.

Run as `python moto_limits.py PORT [LIMIT]`. A PUT or POST whose `x-amz-meta-*` keys and
values add up to more than LIMIT bytes (S3's 2048 by default; a store may take less) gets
S3's answer, 400 MetadataTooLarge; everything else is moto's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

S3_METADATA_BYTES = 2048
META = "HTTP_X_AMZ_META_"
TOO_LARGE = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>MetadataTooLarge</Code>'
             b"<Message>Your metadata headers exceed the maximum allowed metadata size."
             b"</Message></Error>")

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def metadata_bytes(environ: dict[str, Any]) -> int:
    """The size S3 counts: the bytes of each user metadata key and value."""
    return sum(len(name[len(META):].encode()) + len(str(value).encode("latin-1"))
               for name, value in environ.items() if name.startswith(META))


def limited(app: App, limit: int) -> App:
    """The app, refusing requests over `limit` bytes of metadata as S3 does."""
    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] in ("PUT", "POST") and metadata_bytes(environ) > limit:
            start_response("400 Bad Request", [("Content-Type", "application/xml"),
                                               ("Content-Length", str(len(TOO_LARGE)))])
            return [TOO_LARGE]
        return app(environ, start_response)
    return serve


if __name__ == "__main__":
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else S3_METADATA_BYTES
    run_simple("127.0.0.1", int(sys.argv[1]), limited(DomainDispatcherApplication(
        create_backend_app), limit), threaded=True)
