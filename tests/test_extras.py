"""Install what you use: the core runs without the heavy packages, a missing extra is one line naming its
install command, reports are written without matplotlib (the plots are skipped with a line), the extras in
pyproject.toml bring what extras.py says they do, and the Dockerfile installs the project."""

import importlib.util
import json
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from macsql import extras
from macsql.backends.base import ScriptedLLM
from macsql.cli import main
from macsql.errors import InputError, ModelError
from macsql.pipeline import Pipeline
from tests.conftest import SHOP_SQL, make_db

ROOT = Path(__file__).resolve().parents[1]
# Packages the core must not need: anything reachable from `macsql --help`, `ask --backend openai`, `schema`
HEAVY = ("torch", "transformers", "peft", "accelerate", "datasets", "trl", "matplotlib", "fastapi", "uvicorn",
         "llama_cpp", "gguf", "safetensors", "huggingface_hub", "yaml", "mcp")
CHECKOUT = '(in a checkout: pip install -e ".[eval]")'


# ------------------------------------------------------------------------------------------ the helper
@pytest.fixture
def no_matplotlib(monkeypatch):
    """matplotlib as if not installed: `import matplotlib` fails and find_spec finds nothing."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert importlib.util.find_spec("matplotlib") is None


def test_require_names_the_extra_and_the_checkout_form(no_matplotlib):
    with pytest.raises(extras.MissingExtraError) as info:
        extras.require("matplotlib.pyplot", purpose="plotting")
    assert str(info.value) == f'plotting needs matplotlib: pip install "macsql[eval]" {CHECKOUT}'
    assert isinstance(info.value, InputError) and isinstance(info.value, ModelError)
    assert not extras.available("matplotlib")
    assert extras.require("json", purpose="x") is json  # present: the module itself


def test_require_leaves_a_broken_install_to_its_own_message(monkeypatch, tmp_path):
    """An installed package whose own dependency is missing is not "install the extra": that error stays."""
    (tmp_path / "halfpkg").mkdir()
    (tmp_path / "halfpkg" / "__init__.py").write_text("import no_such_dependency_of_halfpkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_of_halfpkg"):
        extras.require("halfpkg", purpose="x")


def test_error_for_turns_a_known_missing_package_into_one_line():
    err = extras.error_for(ModuleNotFoundError("No module named 'trl'", name="trl"))
    assert str(err) == ('this command needs trl: pip install "macsql[train]" '
                        '(in a checkout: pip install -e ".[train]")')
    err = extras.error_for(ModuleNotFoundError("No module named 'transformers'", name="transformers"), "finetune")
    assert str(err) == ('`macsql finetune` needs transformers: pip install "macsql[train]" '
                        '(in a checkout: pip install -e ".[train]")')
    assert extras.error_for(ModuleNotFoundError("No module named 'nope'", name="nope")) is None
    assert extras.error_for(ImportError("cannot import name 'x' from 'torch'", name="torch")) is None


def _extras_of_pyproject() -> tuple[list[str], dict[str, set[str]]]:
    """Core requirement names and each extra's requirement names, self-references (macsql[a,b]) expanded."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def name(req: str) -> str:
        return re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower().replace("_", "-")

    raw = project["optional-dependencies"]

    def expand(extra: str) -> set[str]:
        out = set()
        for req in raw[extra]:
            if name(req) == "macsql":
                for inner in req.split("[", 1)[1].rstrip("]").split(","):
                    out |= expand(inner.strip())
            else:
                out.add(name(req))
        return out

    return [name(r) for r in project["dependencies"]], {extra: expand(extra) for extra in raw}


def test_the_extras_bring_what_extras_py_says_and_the_core_no_torch():
    core, extra_sets = _extras_of_pyproject()
    for heavy in ("torch", "transformers", "peft", "accelerate", "datasets", "gguf", "trl", "matplotlib",
                  "fastapi", "uvicorn", "llama-cpp-python"):
        assert heavy not in core, heavy
    assert "httpx" in core  # the openai backend imports it
    for module, (dist, extra) in extras.OPTIONAL.items():
        if module in ("safetensors", "huggingface_hub", "numpy", "pydantic"):  # brought by another package
            continue
        assert dist.lower() in extra_sets[extra], (module, extra)
    # the default model runs on transformers without llama.cpp; training and the tests need it too
    local = extra_sets["local"]
    assert local <= extra_sets["default-model"] and local <= extra_sets["train"] and local <= extra_sets["dev"]
    assert {"pytest", "ruff", "httpx", "playwright", "fastapi", "matplotlib", "trl"} <= extra_sets["dev"]
    assert extra_sets["fast"] == {"llama-cpp-python"}


# --------------------------------------------------------------------------------- the core alone
CORE_SCRIPT = textwrap.dedent("""
    import importlib.abc, json, sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    HEAVY = {heavy!r}

    class Block(importlib.abc.MetaPathFinder):  # as if these were not installed
        def find_spec(self, name, path, target=None):
            if name.partition(".")[0] in HEAVY:
                raise ModuleNotFoundError(f"No module named {{name!r}} (hidden by the test)", name=name)

    sys.meta_path.insert(0, Block())

    class Chat(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            text = "```sql\\nSELECT COUNT(*) AS n FROM customers WHERE country = 'Spain'\\n```"
            data = json.dumps({{"choices": [{{"message": {{"role": "assistant", "content": text}}}}],
                               "usage": {{"prompt_tokens": 3, "completion_tokens": 2}}}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Chat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{{server.server_address[1]}}/v1"

    from click.testing import CliRunner
    from macsql.cli import main

    results = {{}}
    for key, args in {{"help": ["--help"], "ask_help": ["ask", "--help"], "schema": ["schema", "--db", "demo"],
                      "ask": ["ask", "How many customers live in Spain?", "--db", "demo", "--backend", "openai",
                              "--base-url", url, "--candidates", "1", "--json"],
                      "unreachable": ["ask", "q", "--db", "demo", "--backend", "openai", "--base-url",
                                      "http://127.0.0.1:9/v1", "--request-timeout", "1"]}}.items():
        r = CliRunner().invoke(main, args)
        results[key] = [r.exit_code, r.output, repr(r.exception) if r.exit_code not in (0, 1) else None]
    results["loaded"] = sorted({{m.partition(".")[0] for m in sys.modules}} & HEAVY)
    print("RESULTS" + json.dumps(results))
""")


def test_the_core_runs_without_the_heavy_packages(tmp_path):
    """`macsql --help`, `ask --help`, `schema` and `ask --backend openai` with torch, transformers, llama.cpp,
    matplotlib, fastapi (and the rest of the extras) hidden, in a fresh interpreter."""
    env = {"MACSQL_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", CORE_SCRIPT.format(heavy=set(HEAVY))], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert "RESULTS" in proc.stdout, proc.stderr[-3000:]
    results = json.loads(proc.stdout.split("RESULTS", 1)[1])
    assert results["help"][0] == 0 and "MAC-SQL" in results["help"][1]
    assert results["ask_help"][0] == 0 and "--backend" in results["ask_help"][1]
    assert results["schema"][0] == 0 and "CREATE TABLE customers" in results["schema"][1]
    assert results["ask"][0] == 0, results["ask"]
    assert json.loads(results["ask"][1])["rows"] == [[3]] or "3" in results["ask"][1]
    code, output, exc = results["unreachable"]
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert code == 1 and exc is None and len(errors) == 1 and "cannot reach the model server" in errors[0], output
    assert "ImportError" not in output and "ModuleNotFoundError" not in output
    assert results["loaded"] == []


# ------------------------------------------------------------------------------- reports without plots
QUESTIONS = [("How many customers are there?", "SELECT count(*) FROM customers"),
             ("What is the largest order amount?", "SELECT max(amount) FROM orders")]
SKIPPED = f'plots skipped: plotting needs matplotlib: pip install "macsql[eval]" {CHECKOUT}'


@pytest.fixture
def spider_set(tmp_path) -> Path:
    (tmp_path / "database" / "shop").mkdir(parents=True)
    make_db(tmp_path / "database" / "shop" / "shop.sqlite", SHOP_SQL)
    (tmp_path / "dev.json").write_text(json.dumps([{"db_id": "shop", "question": q, "query": sql}
                                                    for q, sql in QUESTIONS]))
    return tmp_path / "dev.json"


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_score_writes_its_reports_without_matplotlib(no_matplotlib, spider_set, tmp_path):
    out = tmp_path / "score"
    r = _run("score", "--gold-as-pred", "--data", spider_set, "--out", out, "-q")
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.iterdir()} == {"report.json", "report.csv", "summary.md"}
    assert json.loads((out / "report.json").read_text())["metrics"]["ex_bird"] == 100.0
    assert [line for line in r.output.splitlines() if "plots skipped" in line] == [SKIPPED]


def test_eval_and_its_ablations_finish_without_matplotlib(no_matplotlib, spider_set, tmp_path, monkeypatch):
    answers = dict(QUESTIONS)

    def build(**opts):
        def reply(messages, agent):
            question = next(q for q in answers if q in messages[-1]["content"])
            return f"```sql\n{answers[question]}\n```"
        return Pipeline(ScriptedLLM(reply), candidates=1, use_selector=False, use_refiner=not opts["no_refiner"])

    monkeypatch.setattr("macsql.cli.options.build_pipeline", build)
    out = tmp_path / "run"
    r = _run("eval", "--data", spider_set, "--out", out, "--ablations", "--variants", "full,no-refiner", "-q")
    assert r.exit_code == 0, r.output
    assert (out / "ablations.md").exists() and not list(out.rglob("*.png"))
    assert sorted(p.parent.name for p in out.rglob("report.json")) == ["full", "no-refiner"]
    assert r.output.count(SKIPPED) == 3  # each variant's report and the ablation table


def test_the_loss_plot_is_skipped_without_matplotlib(no_matplotlib, tmp_path, capsys):
    from macsql.finetune.plots import plot_losses

    assert plot_losses([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}], tmp_path / "loss.png") is None
    assert not (tmp_path / "loss.png").exists()
    assert capsys.readouterr().err.strip() == ('loss plot skipped: plotting needs matplotlib: pip install '
                                               '"macsql[train]" (in a checkout: pip install -e ".[train]")')


# ------------------------------------------------------------------------------------------ Docker
def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in (raw.strip() for raw in joined.splitlines()) if line]


def test_the_dockerfile_installs_the_project_and_runs_macsql():
    steps = _instructions((ROOT / "Dockerfile").read_text())
    froms = [args for op, args in steps if op == "FROM"]
    assert froms and all(f.startswith("python:3.11-slim") for f in froms)
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM"):]  # the image that ships
    assert ("ENTRYPOINT", '["macsql"]') in final
    assert ("EXPOSE", "8000") in final
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert '".[serve,fast]"' in runs and '"macsql[serve,fast]"' in runs  # the project and its extras
    assert ("COPY", ". .") in steps
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv"} <= set(ignored)
    cmd = json.loads(dict(final)["CMD"])
    assert cmd[:1] == ["serve"] and "0.0.0.0" in cmd  # needs MACSQL_TOKEN, as the header says
    assert "MACSQL_TOKEN" in (ROOT / "Dockerfile").read_text()


def _docker_runs() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.docker
@pytest.mark.skipif(not _docker_runs(), reason="no running Docker engine (`docker info` fails)")
def test_the_docker_image_builds_and_answers_help():
    tag = "macsql-test:latest"
    build = subprocess.run(["docker", "build", "-t", tag, str(ROOT)], capture_output=True, text=True,
                           timeout=3600)
    assert build.returncode == 0, build.stderr[-3000:]
    try:
        run = subprocess.run(shlex.split(f"docker run --rm {tag} --help"), capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0 and "MAC-SQL" in run.stdout, run.stderr
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)
