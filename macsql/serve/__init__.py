"""`macsql serve`: an HTTP API and a web page over one loaded pipeline (app.py), and its start-up checks
(server.py). Importing this package imports neither FastAPI nor uvicorn."""
