"""The paths of the model-dispatched routes, in one place.

``inference.py`` serves them; ``scopes.py`` (key roles and per-key limits) and ``app.py``
(the fast path, the activity recorder) classify requests by them. A table with no imports,
so every one of those modules can use it without import cycles.
"""

from __future__ import annotations

__all__ = ["JSON_ROUTES", "MULTIPART_ROUTES", "QUERY_ROUTES"]

#: POST routes whose JSON body names the model.
JSON_ROUTES = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/audio/speech",
    "/v1/images/generations",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/completion",
    "/infill",
    "/rerank",
    "/reranking",
    "/v1/rerank",
    "/v1/reranking",
)
#: POST routes whose multipart form names the model.
MULTIPART_ROUTES = ("/v1/audio/transcriptions", "/v1/images/edits")
#: GET routes whose query string names the model.
QUERY_ROUTES = ("/v1/audio/voices", "/props")
