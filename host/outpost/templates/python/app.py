"""The Outpost function `{{name}}`: a wasi:http handler built with componentize-py.

Outpost runs each request in a fresh instance, so module state starts from
scratch every time.
"""

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        # `GET /{{name}}?ada` answers `hello, ada, from {{name}}`.
        path = request.path_with_query() or "/"
        who = path.partition("?")[2] or "stranger"
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with body.write() as stream:
            stream.blocking_write_and_flush(f"hello, {who}, from {{name}}\n".encode())
        OutgoingBody.finish(body, None)
