"""Peak memory of `macsql serve` answering `/api/run` with a result at the executor's 64 MB cap.

Builds a database whose one table holds 60 rows of 1 MiB each (just under the cap) (control characters, which JSON escapes to six
bytes each: the worst case for an encoded reply), starts a real `macsql serve` on loopback (no model is
loaded: `/api/run` needs none), sends the query from several clients at once and reads the server's peak
resident memory (VmHWM) before and after:

    python benchmarks/bench_serve_memory.py --clients 3
"""

from __future__ import annotations

import argparse
import json
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _post(url: str, body: dict) -> tuple[int, int]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, len(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, len(exc.read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "big.sqlite"
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [("\x01" * (1 << 20),) for _ in range(60)])
        conn.commit()
        conn.close()
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "macsql", "serve", "--db", f"big={db}", "--port", str(port),
                                   "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(120):
                try:
                    urllib.request.urlopen(base + "/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.5)
            idle = _peak_rss_mb(server.pid)
            start = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                replies = list(pool.map(lambda _: _post(base + "/api/run", {"db": "big", "sql": "SELECT * FROM t"}),
                                        range(args.clients)))
            seconds = time.perf_counter() - start
            peak = _peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"60 MiB result, {args.clients} clients at once: replies {[s for s, _ in replies]}, "
          f"bytes {[n for _, n in replies]}, {seconds:.1f} s")
    print(f"server peak RSS: {idle:.0f} MB after start, {peak:.0f} MB after the queries")


if __name__ == "__main__":
    main()
