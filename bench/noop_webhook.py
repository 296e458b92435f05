"""A webhook that allows everything and records nothing, served the way agentmatrix's is (aiohttp
on uvloop, HTTPS): what any such webhook costs the API server, for `bench/webhook.py` to compare.

    python bench/noop_webhook.py CERT KEY PORT

`GET /scales` says how many scale reviews it has answered.
"""

from __future__ import annotations

import ssl
import sys

import orjson
import uvloop
from aiohttp import web


def main() -> None:
    cert, key, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    scales = 0

    async def validate(request: web.Request) -> web.Response:
        nonlocal scales
        review = orjson.loads(await request.read())["request"]
        scales += review.get("subResource") == "scale"
        answer = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                  "response": {"uid": review["uid"], "allowed": True}}  # fmt: skip
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def count(_request: web.Request) -> web.Response:
        return web.Response(text=str(scales))

    app = web.Application()
    app.router.add_post("/validate", validate)
    app.router.add_get("/scales", count)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=context, access_log=None, print=None)


if __name__ == "__main__":
    main()
