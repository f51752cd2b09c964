"""The child processes of ``consortium bench data``: the node publishing (its export and its upload through
``consortium.node.open_data``, the calls ``consortium dataset publish`` makes), a client downloading (the
SDK's ``download``, what ``consortium dataset download`` calls), the peer's raw httpx upload and download,
and the peer's trivial static file server. Each timed mode prints one JSON line: seconds and its own
resident-memory growth (peak during the work minus its size before, imports done)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MB = 1 << 20
COPY_CHUNK = 1 << 20


def memory_kb(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in kB, from /proc."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def reset_peak(pid: int | str = "self") -> bool:
    """Reset a process's VmHWM to its current RSS (Linux ``clear_refs`` 5); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class _Handler(SimpleHTTPRequestHandler):
    """GET serves the directory's files; PUT writes the body to a file there (no checks: a peer only)."""

    def do_PUT(self) -> None:  # noqa: N802 (the http.server naming)
        left = int(self.headers["Content-Length"])
        with open(Path(self.directory) / Path(self.path).name, "wb") as out:
            while left > 0:
                chunk = self.rfile.read(min(COPY_CHUNK, left))
                if not chunk:
                    break
                out.write(chunk)
                left -= len(chunk)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


def _serve(root: Path, port: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), lambda *a: _Handler(*a, directory=str(root)))
    server.serve_forever()


def _chunks(path: Path):
    with path.open("rb") as f:
        while chunk := f.read(COPY_CHUNK):
            yield chunk


def _timed(args: argparse.Namespace) -> dict:
    import httpx

    from consortium.client import HubClient
    from consortium.crypto import load_org_identity
    from consortium.node import open_data
    from consortium.open_data_wire import AnonymityReport, Datasheet, OpenVersionIn

    base = memory_kb()["VmRSS"]
    exact = reset_peak()
    started = time.perf_counter()
    result: dict = {}
    if args.mode == "publish":
        sheet = Datasheet.model_validate({key: f"{key}: a generated benchmark table" for key in Datasheet.model_fields})
        with HubClient(args.hub, identity=load_org_identity(args.org_dir)) as client:
            done = open_data.export_registered(args.org_dir, args.ref.partition("/")[2], args.work,
                                               reencode=args.reencode)
            exported = time.perf_counter()
            try:
                open_data.send_version(client, args.ref, done.path, OpenVersionIn(
                    version=args.version, sha256=done.sha256, table_sha256=done.table_sha256, rows=done.rows,
                    license="CC0-1.0", datasheet=sheet, anonymity=AnonymityReport(about_people=False)))
            finally:
                done.discard()
        result = {"export_s": exported - started, "send_s": time.perf_counter() - exported, "bytes": done.size}
    elif args.mode == "download":
        with HubClient(args.hub) as client:
            record = open_data.download(client, args.ref, args.version, args.out)
        result = {"bytes": record["size"]}
    elif args.mode == "put":
        with httpx.Client(trust_env=False, timeout=300.0) as http:
            http.put(args.url, content=_chunks(args.file),
                     headers={"Content-Length": str(args.file.stat().st_size)}).raise_for_status()
        result = {"bytes": args.file.stat().st_size}
    else:
        with httpx.Client(trust_env=False, timeout=300.0) as http, http.stream("GET", args.url) as response:
            response.raise_for_status()
            with args.out.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        result = {"bytes": args.out.stat().st_size}
    peak = memory_kb()["VmHWM"]
    return result | {"seconds": time.perf_counter() - started, "rss_before_mb": base / 1024,
                     "growth_mb": (peak - base) / 1024, "peak_exact": exact}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m consortium.bench.data_worker")
    parser.add_argument("mode", choices=["publish", "download", "put", "get", "serve"])
    parser.add_argument("--hub")
    parser.add_argument("--org-dir", type=Path)
    parser.add_argument("--ref")
    parser.add_argument("--version")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--url")
    parser.add_argument("--file", type=Path)
    parser.add_argument("--root", type=Path)
    parser.add_argument("--reencode", action="store_true", help="publish: export even a canonical file")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        _serve(args.root, args.port)
        return
    print(json.dumps(_timed(args)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
