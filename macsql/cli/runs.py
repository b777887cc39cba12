"""`macsql runs pack|unpack`: carry an eval run between machines, or into git, without the benchmark's text."""

from __future__ import annotations

import click


@click.group("runs", no_args_is_help=True)
def runs_group():
    """Carry `macsql eval` runs between machines without the benchmark's own text.

    \b
    A run of hours is worth keeping: `pack` writes its answers, candidates, traces, tokens and seconds (and
    each folder's run.json) to one small gzip file, leaving out the questions and gold SQL, which stay in the
    data file. `unpack` puts them back from that data file, so `macsql eval` with the same options resumes
    the run where it stopped and `macsql score`/`compare` read it.
    \b
      macsql runs pack runs/abl200 --to benchmarks/runs/abl200.jsonl.gz
      macsql runs unpack benchmarks/runs/abl200.jsonl.gz --data spider/dev.json --out runs/abl200
    """


@runs_group.command("pack")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--to", "dest", required=True, type=click.Path(dir_okay=False),
              help="The archive to write (a .jsonl.gz file; replaced if it exists).")
def pack_cmd(run, dest):
    """Write RUN (an `eval --out` folder, ablation subfolders included) to one archive."""
    from macsql.evaluate.archive import pack

    counts = pack(run, dest)
    click.echo(f"packed {sum(counts.values())} answers ({', '.join(f'{k}: {v}' for k, v in counts.items())}) "
               f"into {dest}")


@runs_group.command("unpack")
@click.argument("archive", type=click.Path(dir_okay=False))
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The benchmark file the run answered (its sha256 must match the run's).")
@click.option("--db-root", type=click.Path(), default=None, help="As for `macsql eval`.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The run folder to rebuild.")
@click.option("--overwrite", is_flag=True, help="Replace answers already in --out.")
def unpack_cmd(archive, data, db_root, out, overwrite):
    """Rebuild the run folder(s) of ARCHIVE under --out, the benchmark's text taken from --data.

    The archive is checked whole before anything is written: run names must be plain folder names inside
    --out, and its uncompressed size is bounded."""
    from macsql.evaluate.archive import unpack

    counts = unpack(archive, out, data, db_root, overwrite=overwrite)
    click.echo(f"unpacked {sum(counts.values())} answers ({', '.join(f'{k}: {v}' for k, v in counts.items())}) "
               f"into {out}; `macsql eval` with the run's options resumes it")
