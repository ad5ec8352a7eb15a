"""A WSGI app that answers with what its server parsed of the request.

Run under gunicorn (a real, independent HTTP/1.1 parser) by .ci/run for the
peer tests in adapter-tokio/tests/peers.rs: the JSON body lists the method,
the path and query, every header as gunicorn handed it to the app, and the
body's length, so a test can assert what actually reached a real server.
"""

import json


def app(environ, start_response):
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = value
    if "CONTENT_TYPE" in environ:
        headers["content-type"] = environ["CONTENT_TYPE"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    answer = json.dumps(
        {
            "method": environ["REQUEST_METHOD"],
            "path": environ.get("PATH_INFO", ""),
            "query": environ.get("QUERY_STRING", ""),
            "headers": headers,
            "body_length": len(body),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
    return [answer]
