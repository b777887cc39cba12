"""Load on `macsql serve`: concurrent clients asking questions over HTTP, and seconds to the first streamed step.

The server runs in a child process (uvicorn, as `macsql serve` runs it), so the load generator does not
share its interpreter; clients are asyncio tasks on one httpx connection pool. Every client asks its
questions one after another; all clients start together. A prober in a third process asks /health every
50 ms meanwhile (its own process, so that the load generator's work does not count): a slow question must
not slow it.

Scripted backend (no model; what the server itself costs), 50 clients:

    .venv/bin/python benchmarks/bench_serve.py --clients 50 --requests 20
    .venv/bin/python benchmarks/bench_serve.py --clients 50 --requests 4 --model-ms 50 --serial --stream

`--model-ms` makes every scripted model call take that long, and `--serial` puts the scripted backend
behind the lock a local model gets (one call at a time), so the run shows queueing, not the model.
`--stream` uses /api/ask/stream and also reports the seconds to the first streamed step and to the first
model step. `--page` does what the page does for every question: the stream, then the answer's first page
of rows (`POST /api/run`, page 0, 50 rows: the server-side paging); a page refused with 429 (the query
pool is full) counts as an error of its own kind. `--store postgresql://...` keeps the conversations there
(as replicas would) instead of a throwaway SQLite file.

As the page's users would, 50 clients, every question streamed and its first page fetched:

    nice -n 10 .venv/bin/python benchmarks/bench_serve.py --clients 50 --requests 20 --model-ms 50 --page

The real default model (llama.cpp when installed), one client, seconds to the first streamed step:

    flock /tmp/macsql-heavy.lock .venv/bin/python benchmarks/bench_serve.py --model default --clients 1 \\
        --requests 3 --stream
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import percentile, table  # noqa: E402

QUESTION = "How many customers live in Spain?"
SQL_REPLY = "Final SQL:\n```sql\nSELECT COUNT(*) FROM customers WHERE country = 'Spain'\n```"
PAGE_SIZE = 50  # the page's default rows a page


def serve_child(args) -> None:
    """In the child: build the pipeline, serve it on a free loopback port, print the URL, wait for stdin."""
    from macsql.demo import demo_db_path
    from macsql.pipeline import Pipeline
    from macsql.serve.app import create_app
    from macsql.serve.server import serving_in_thread

    if args.model == "scripted":
        from macsql.backends.base import ScriptedLLM
        from macsql.backends.batching import SerializedLLM

        def reply(_messages, _agent):
            time.sleep(args.model_ms / 1000)
            return SQL_REPLY

        llm = ScriptedLLM(reply)
        pipe = Pipeline(SerializedLLM(llm) if args.serial else llm)
    else:
        from macsql.weights import DEFAULT_MODEL

        pipe = Pipeline.from_pretrained(DEFAULT_MODEL if args.model == "default" else args.model,
                                        backend=args.backend)
    import tempfile

    # the benchmark's thousands of conversations go to a throwaway store, not the user's cache folder
    store = args.store or Path(tempfile.mkdtemp(prefix="macsql-bench-")) / "conversations.sqlite"
    app = create_app(pipe, {"demo": demo_db_path()}, workers=args.workers, store=store)
    with serving_in_thread(app) as url:
        print(url, flush=True)
        sys.stdin.read()  # the parent closes stdin when it is done


async def one_ask(http, stream: bool, page: bool = False) -> dict:
    start = time.perf_counter()
    body = {"question": QUESTION, "db": "demo"}
    if not stream:
        r = await http.post("/api/ask", json=body)
        ok = r.status_code == 200 and r.json()["rows"]
        return {"ok": bool(ok), "seconds": time.perf_counter() - start}
    first_step = first_model = answer = None
    async with http.stream("POST", "/api/ask/stream", json=body) as r:
        kind = None
        async for line in r.aiter_lines():  # ": keep-alive" comment lines are neither events nor data
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                now = time.perf_counter() - start
                if kind == "step":
                    first_step = first_step if first_step is not None else now
                    if first_model is None and any("prompt_tokens" in t for t in json.loads(line[6:])["trace"]):
                        first_model = now
                elif kind == "answer" and r.status_code == 200:
                    answer = json.loads(line[6:])
    ok = answer is not None and bool(answer["rows"])
    out = {"ok": ok, "seconds": time.perf_counter() - start, "first_step": first_step, "first_model": first_model}
    if page and answer is not None:  # the page shows the answer's rows as its first page, asked of the server
        page_start = time.perf_counter()
        r = await http.post("/api/run", json={"db": "demo", "sql": answer["sql"], "page": 0, "page_size": PAGE_SIZE})
        out.update(page_seconds=time.perf_counter() - page_start, page_status=r.status_code,
                   ok=ok and r.status_code == 200 and r.json()["rows"] == answer["rows"][:PAGE_SIZE])
        out["seconds"] = time.perf_counter() - start
    return out


def probe_child(url: str) -> None:
    """In the prober process: GET /health every 50 ms until stdin closes; print the latencies as JSON."""
    import threading

    import httpx

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    seconds, failures = [], 0
    with httpx.Client(base_url=url, timeout=60) as http:
        http.get("/health")  # connected: the load may start (a short run would otherwise end unprobed)
        print("ready", flush=True)
        while not stop.is_set():
            t = time.perf_counter()
            failures += http.get("/health").status_code != 200
            seconds.append(time.perf_counter() - t)
            time.sleep(0.05)
    print(json.dumps({"seconds": seconds, "failures": failures}), flush=True)


async def load(url: str, clients: int, requests: int, stream: bool, page: bool = False) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=clients + 1, max_keepalive_connections=clients + 1)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        await one_ask(http, stream, page)  # warm-up (schema cache, first graph run), not counted
        results, errors = [], []

        async def client():
            for _ in range(requests):
                try:
                    results.append(await one_ask(http, stream, page))
                except Exception as exc:  # counted, not raised: the figure is the error count
                    errors.append(repr(exc))

        probe = subprocess.Popen([sys.executable, __file__, "--probe", url], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        if (await asyncio.to_thread(probe.stdout.readline)).strip() != "ready":
            sys.exit("the /health prober did not start")
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - start
        probed = json.loads(probe.communicate("", timeout=120)[0])
    health = probed["seconds"]
    errors += [f"first page refused: {r['page_status']}" if r.get("page_status", 200) != 200 else "wrong answer"
               for r in results if not r["ok"]] + ["/health failed"] * probed["failures"]
    return {"results": results, "health": health, "errors": errors, "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=20, help="questions per client")
    ap.add_argument("--model", default="scripted", help="scripted, default (the default model) or a model name")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--model-ms", type=float, default=0.0, help="scripted: milliseconds per model call")
    ap.add_argument("--serial", action="store_true", help="scripted: one model call at a time (a local model)")
    ap.add_argument("--stream", action="store_true", help="use /api/ask/stream; report time to first step")
    ap.add_argument("--page", action="store_true",
                    help="as the page does: stream (implies --stream), then fetch the answer's first page")
    ap.add_argument("--store", default=None, help="the conversation store (a postgresql:// URL; default: a "
                                                  "throwaway SQLite file)")
    ap.add_argument("--workers", type=int, default=8, help="questions in flight in the server")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the server process
    ap.add_argument("--probe", metavar="URL", help=argparse.SUPPRESS)  # the /health prober process
    args = ap.parse_args()
    args.stream = args.stream or args.page
    if args.serve:
        return serve_child(args)
    if args.probe:
        return probe_child(args.probe)

    child_args = [a for a in sys.argv[1:]] + ["--serve"]
    child = subprocess.Popen([sys.executable, __file__, *child_args], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        load_start = time.perf_counter()
        url = child.stdout.readline().strip()
        if not url.startswith("http"):
            sys.exit("the server did not start")
        load_s = time.perf_counter() - load_start
        out = asyncio.run(load(url, args.clients, args.requests, args.stream, args.page))
    finally:
        child.stdin.close()
        child.wait(timeout=30)

    lat = [r["seconds"] for r in out["results"]]
    backend = args.model + (f", {args.model_ms:g} ms/call" if args.model == "scripted" else f" ({args.backend})")
    backend += ", serialised" if args.serial else ""
    mode = "stream + first page" if args.page else "stream" if args.stream else "ask"
    print(f"## macsql serve, {args.clients} clients x {args.requests} questions, {backend}, {mode}; "
          f"server start {load_s:.1f} s")
    headers = ["requests", "errors", "req/s", "p50 s", "p99 s", "health p50 ms", "health p99 ms"]
    row = [len(lat), len(out["errors"]), len(lat) / out["wall"], percentile(lat, 50), percentile(lat, 99),
           1000 * percentile(out["health"], 50), 1000 * percentile(out["health"], 99)]
    if args.stream:
        firsts = [r["first_step"] for r in out["results"] if r["first_step"] is not None]
        models = [r["first_model"] for r in out["results"] if r["first_model"] is not None]
        headers += ["first step p50 s", "first model step p50 s"]
        row += [percentile(firsts, 50), percentile(models, 50)]
    if args.page:
        pages = [r["page_seconds"] for r in out["results"] if "page_seconds" in r]
        headers += ["page p50 s", "page p99 s", "pages refused (429)"]
        row += [percentile(pages, 50), percentile(pages, 99), sum(r.get("page_status") == 429 for r in out["results"])]
    table(headers, [row])
    if out["errors"]:
        print("errors (first 5):", *out["errors"][:5], sep="\n  ")


if __name__ == "__main__":
    main()
