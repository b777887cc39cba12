"""Small helpers shared by the benchmark scripts: percentiles, a fixed-width table, backend specs, peak RSS."""

from __future__ import annotations

import math
import resource
import sys
from collections.abc import Sequence

SPIDER_DEV = "/work/shared/data/spider/dev.json"


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence; nan when it is empty."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def table(headers: Sequence[str], rows: Sequence[Sequence], *, file=None) -> None:
    """Print rows under headers, columns padded to their widest cell; floats with 3 significant decimals."""
    def cell(v):
        if isinstance(v, float):
            return "nan" if math.isnan(v) else (f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}")
        return str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)]
    out = file or sys.stdout
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in text:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)), file=out)


def parse_backend_spec(spec: str) -> tuple[str, str, dict]:
    """`hf:dtype=bf16` -> ("hf:dtype=bf16", "hf", {"dtype": "bf16"}); numbers and true/false are converted."""
    name, _, opts = spec.partition(":")
    options: dict = {}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        low = value.lower()
        if low in ("true", "false"):
            options[key] = low == "true"
        else:
            try:
                options[key] = int(value)
            except ValueError:
                options[key] = value
    return spec, name, options


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
