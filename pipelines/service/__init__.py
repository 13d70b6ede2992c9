"""`continual serve`: the registry, arrivals, predictions and the live report over HTTP.

    continual serve [--host 127.0.0.1] [--port 8000] [--workers N]

- `config`: the server's settings (limits, batching), each with its default and reason;
- `answers`: the loaded backbone and prefixes, answering (task, text) items in one pass;
- `batching`: requests that arrive together gathered into mixed-task micro-batches;
- `auth`: bearer tokens (read/write scope) and the per-token rate limit;
- `uploads`: a multipart dataset upload, streamed to disk and validated like the CLI's files;
- `metrics`: Prometheus counters and histograms;
- `dashboard`: the page at `/`;
- `app`: the FastAPI application (routes, errors); `server`: uvicorn, in-process workers.
"""
