"""A webhook that allows everything and records nothing, served the way agentmatrix's is (aiohttp
on uvloop, HTTPS requiring a client certificate of CLIENT_CA): what any such webhook costs the API
server, for `bench/webhook.py` to compare.

    python bench/noop_webhook.py CERT KEY CLIENT_CA PORT

`GET /scales?namespace=NS` says how many scale reviews of NS it has answered.
"""

from __future__ import annotations

import ssl
import sys
from collections import Counter

import orjson
import uvloop
from aiohttp import web


def main() -> None:
    cert, key, client_ca, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    scales: Counter[str] = Counter()

    async def validate(request: web.Request) -> web.Response:
        review = orjson.loads(await request.read())["request"]
        if review.get("subResource") == "scale":
            scales[review.get("namespace", "")] += 1
        answer = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                  "response": {"uid": review["uid"], "allowed": True}}  # fmt: skip
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def count(request: web.Request) -> web.Response:
        return web.Response(text=str(scales[request.query.get("namespace", "")]))

    app = web.Application()
    app.router.add_post("/validate", validate)
    app.router.add_get("/scales", count)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=client_ca)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=context, access_log=None, print=None)


if __name__ == "__main__":
    main()
