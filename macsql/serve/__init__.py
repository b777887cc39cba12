"""`macsql serve`: an HTTP API and a web page over one loaded pipeline. app.py builds the app (middleware,
errors), state.py holds the `Server` (the pipeline, databases, pools, running questions), routes.py the
routes, store.py the conversations (a SQLite file, or PostgreSQL for replicas), hosts.py the Host names
it answers to, server.py the start-up checks and uvicorn. Importing this package imports neither FastAPI nor uvicorn."""
