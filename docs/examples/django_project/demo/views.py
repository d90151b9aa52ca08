"""Views that exercise what a server must get right: forms with CSRF, multipart uploads, streaming."""

import hashlib
import time

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods


def index(request: HttpRequest) -> HttpResponse:
    return render(request, "demo/index.html")


@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    """GET: the form (with its CSRF token); POST: the SHA-256 and size of the uploaded file."""
    if request.method == "GET":
        return render(request, "demo/upload.html")
    uploaded = request.FILES.get("file")
    if uploaded is None:
        return JsonResponse({"error": "no file field"}, status=400)
    digest = hashlib.sha256()
    for chunk in uploaded.chunks():
        digest.update(chunk)
    return JsonResponse(
        {
            "name": uploaded.name,
            "size": uploaded.size,
            "sha256": digest.hexdigest(),
            "note": request.POST.get("note", ""),
        }
    )


def stream(request: HttpRequest) -> StreamingHttpResponse:
    """``n`` lines, ``delay`` seconds apart: the server must send each as it is produced."""
    n = min(int(request.GET.get("n", "5")), 1000)
    delay = min(float(request.GET.get("delay", "0")), 2.0)

    def lines():
        for i in range(n):
            if i and delay:
                time.sleep(delay)
            yield f"line {i} at {time.time():.3f}\n".encode()

    return StreamingHttpResponse(lines(), content_type="text/plain; charset=utf-8")
