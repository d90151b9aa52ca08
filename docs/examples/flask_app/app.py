"""A small Flask app served by webcluster: ``webcluster --chdir docs/examples/flask_app --app app:app``.

It covers what a server must get right under Flask: JSON in and out, a multipart upload, a streamed
response (``stream_with_context``), sessions (a signed cookie) and redirects that honour the mount
point (``--root-path``).
"""

import hashlib
import os
import time

from flask import Flask, Response, jsonify, redirect, request, session, stream_with_context, url_for

app = Flask(__name__)
app.secret_key = os.environ.get("FLASK_SECRET_KEY", "example-only-not-secret")
app.config["MAX_CONTENT_LENGTH"] = 16 * 1024 * 1024


@app.get("/")
def index() -> str:
    return "webcluster + Flask\n"


@app.post("/echo")
def echo() -> Response:
    """The JSON body back, with what the server told the app about the request."""
    return jsonify(
        body=request.get_json(),
        script_root=request.script_root,
        server_software=request.environ.get("SERVER_SOFTWARE"),
    )


@app.post("/upload")
def upload() -> Response | tuple[Response, int]:
    uploaded = request.files.get("file")
    if uploaded is None:
        return jsonify(error="no file field"), 400
    digest, size = hashlib.sha256(), 0
    while chunk := uploaded.stream.read(65536):
        digest.update(chunk)
        size += len(chunk)
    return jsonify(name=uploaded.filename, size=size, sha256=digest.hexdigest())


@app.get("/stream")
def stream() -> Response:
    n = min(request.args.get("n", 5, type=int), 1000)
    delay = min(request.args.get("delay", 0.0, type=float), 2.0)

    @stream_with_context
    def lines():
        for i in range(n):
            if i and delay:
                time.sleep(delay)
            yield f"line {i} of {request.path}\n"

    return Response(lines(), mimetype="text/plain")


@app.post("/login")
def login() -> Response:
    session["user"] = request.form.get("user", "")
    return redirect(url_for("whoami"))


@app.get("/whoami")
def whoami() -> Response:
    return jsonify(user=session.get("user"))
