"""MAC-SQL: multi-agent text-to-SQL (Selector, Decomposer, Refiner) on fine-tunable language models."""

__version__ = "0.1.0"


def __getattr__(name):  # lazy, so `import macsql` (and `macsql --help`) stays instant
    if name in ("Pipeline", "Answer"):
        from macsql import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)


__all__ = ["Pipeline", "Answer", "__version__"]
