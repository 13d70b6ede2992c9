"""`continual serve` and `continual tokens`: the HTTP service and who may use it.

continual serve [--host 127.0.0.1] [--port 8000] [--workers N] [--backbone NAME] ...
continual tokens create --scope read|write [--name N]
continual tokens list | tokens revoke ID
"""

from __future__ import annotations

import argparse
from typing import Any

from pipelines.cli_jobs import render_table
from pipelines.cli_options import registry_args


def add_serve_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    from pipelines.service.config import BATCHING, ServeSettings

    d = ServeSettings()
    p = subparsers.add_parser(
        "serve",
        parents=[common],
        help="serve the registry, arrivals, predictions and reports over HTTP",
        description="Run the HTTP API (FastAPI on uvicorn) over one registry, with in-process "
        "arrival workers. OpenAPI at /openapi.json and /docs; a dashboard at /.",
    )
    p.set_defaults(func=cmd_serve)
    p.add_argument("--host", default=d.host, help=f"address to listen on (default {d.host})")
    p.add_argument("--port", type=int, default=d.port, help=f"port (default {d.port})")
    p.add_argument(
        "--workers",
        type=int,
        default=d.workers,
        help=f"in-process arrival workers (default {d.workers}; 0: leave jobs to "
        "`continual worker` processes)",
    )
    p.add_argument("--backbone", help="the backbone to answer with (default: the registry's)")
    p.add_argument(
        "--batching",
        choices=BATCHING,
        default=d.batching,
        help="mixed: one pass over requests that arrive together; task: one pass per task; "
        f"off: one pass per request (default {d.batching})",
    )
    p.add_argument(
        "--batch-window-ms",
        type=float,
        default=d.batch_window_ms,
        help=f"how long a micro-batch waits for more requests (default {d.batch_window_ms:g})",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=d.max_batch,
        help=f"inputs per pass (default {d.max_batch})",
    )
    p.add_argument(
        "--max-inputs",
        type=int,
        default=d.max_inputs,
        help=f"texts per predict request (default {d.max_inputs})",
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=d.max_upload_mb,
        help=f"largest dataset upload (default {d.max_upload_mb:g} MB)",
    )
    p.add_argument(
        "--rate-limit",
        type=float,
        default=d.rate,
        help=f"requests a second per token or client (default {d.rate:g}; bursts of twice that)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="serve without tokens on a non-loopback address (anyone who reaches it may write)",
    )

    tokens = subparsers.add_parser(
        "tokens",
        parents=[common],
        help="create, list and revoke the HTTP API's tokens",
        description="Bearer tokens of `continual serve` (only their hashes are stored).",
    )
    sub = tokens.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)

    def leaf(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        q = sub.add_parser(name, parents=[common], help=help, description=help)
        q.set_defaults(func=func)
        return q

    c = leaf("create", cmd_token_create, "make a token (printed once; keep it)")
    c.add_argument("--scope", choices=("read", "write"), required=True)
    c.add_argument("--name", help="a name to recognise it by (default: SCOPE-token)")
    leaf("list", cmd_token_list, "the tokens, their scopes and whether revoked")
    leaf("revoke", cmd_token_revoke, "stop a token working, at once").add_argument("id", type=int)


def cmd_serve(a: argparse.Namespace) -> dict[str, Any]:
    from pipelines.service.config import ServeSettings
    from pipelines.service.server import serve

    settings = ServeSettings(
        host=a.host,
        port=a.port,
        workers=a.workers,
        backbone=a.backbone,
        batching=a.batching,
        batch_window_ms=a.batch_window_ms,
        max_batch=a.max_batch,
        max_inputs=a.max_inputs,
        max_upload_mb=a.max_upload_mb,
        rate=a.rate_limit,
        insecure=a.insecure,
    )
    serve(registry_args(a), settings)
    return {"stopped": True, "_human": "stopped"}


def cmd_token_create(a: argparse.Namespace) -> dict[str, Any]:
    with registry_args(a).open() as reg:
        secret, record = reg.tokens.create(scope=a.scope, name=a.name)
    return {
        "token": secret,
        "scope": record.scope,
        "name": record.name,
        "id": record.id,
        "_human": f"{secret}\n(token {record.id}, {record.name}, {record.scope}: shown once; "
        "send it as 'Authorization: Bearer TOKEN')",
    }


def cmd_token_list(a: argparse.Namespace) -> dict[str, Any]:
    with registry_args(a).open() as reg:
        rows = reg.tokens.list()
    table = render_table(
        ["id", "name", "scope", "created", "revoked"],
        [[t.id, t.name, t.scope, t.created_at.isoformat(timespec="seconds"),
          t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else "-"] for t in rows],
    )  # fmt: skip
    return {"tokens": [t.to_dict() for t in rows], "_human": table}


def cmd_token_revoke(a: argparse.Namespace) -> dict[str, Any]:
    with registry_args(a).open() as reg:
        record = reg.tokens.revoke(a.id)
    return {"token": record.to_dict(), "_human": f"token {record.id} ({record.name}) revoked"}
