"""`ltbench bench losses`: forward + backward time of every registered loss against `ce`.

For each size (B, C) every loss gets the same random batch: cosines u ~ U(-1, 1) for a cosine
head, logits 10 * u for a linear head (so `ce` sees logits in [-10, 10]), targets uniform over C
classes, and a long-tailed count profile from 1000 down to 2 images per class (iNaturalist's
range). The losses are timed round-robin (each repeat times every loss once), so drifts in the
machine's speed hit them alike; the figure is the median over `repeats` after `warmup` rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Sequence

DEFAULT_SIZES = ((512, 10), (512, 100), (512, 1000), (512, 8142))


def long_tailed_counts(num_classes: int, n_max: int = 1000, n_min: int = 2) -> list[int]:
    """Exponential profile `n_max * (n_min / n_max)^(i / (C - 1))`, at least `n_min`."""
    if num_classes == 1:
        return [n_max]
    ratio = n_min / n_max
    return [max(n_min, int(n_max * ratio ** (i / (num_classes - 1)))) for i in range(num_classes)]


def bench_losses(
    sizes: Iterable[Sequence[int]] = DEFAULT_SIZES,
    device: str = "cpu",
    repeats: int | None = 20,
    warmup: int | None = 5,
    losses: Iterable[str] | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> list[dict]:
    """Median forward + backward milliseconds of each loss (default: all registered) per size.

    One row per (loss, size): `loss, head, batch, classes, device, threads, median_ms, ce_ms,
    ratio, min_ms, min_ratio`, where `ratio = median_ms / ce_ms` and `min_ratio` the same for
    the fastest repeat (steadier on a busy machine); `ce` is always timed as the reference.
    `threads`: torch's CPU thread count for the run (restored afterwards); on a shared machine
    one thread gives far steadier CPU figures.
    """
    import torch

    repeats = 20 if repeats is None else repeats  # None: the CLI's "not given"
    warmup = 5 if warmup is None else warmup
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _time_losses(sizes, torch.device(device), repeats, warmup, losses, seed)
    finally:
        torch.set_num_threads(previous_threads)


def _time_losses(sizes, dev, repeats: int, warmup: int, losses, seed: int) -> list[dict]:
    import torch

    from ltbench.sdk.registry import build_loss, get_spec, list_losses

    names = list(losses) if losses is not None else list(list_losses(kind="loss"))
    if "ce" not in names:
        names.insert(0, "ce")

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    rows: list[dict] = []
    for batch, classes in sizes:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        u = torch.rand((batch, classes), generator=gen) * 2 - 1
        targets = torch.randint(0, classes, (batch,), generator=gen).to(dev)
        inputs = {
            "cosine": u.to(dev, copy=True).requires_grad_(),
            "linear": (10 * u).to(dev).requires_grad_(),
        }
        counts = long_tailed_counts(classes)
        plugins = {name: build_loss(name, counts).to(dev) for name in names}
        times: dict[str, list[float]] = {name: [] for name in names}
        for round_ in range(warmup + repeats):
            for name, plugin in plugins.items():
                x = inputs[get_spec(name).head]
                x.grad = None
                sync()
                start = time.perf_counter()
                plugin(x, targets).backward()
                sync()
                if round_ >= warmup:
                    times[name].append(time.perf_counter() - start)
        ce_ms = statistics.median(times["ce"]) * 1e3
        ce_min_ms = min(times["ce"]) * 1e3
        for name in names:
            median_ms = statistics.median(times[name]) * 1e3
            min_ms = min(times[name]) * 1e3
            rows.append(
                {
                    "loss": name,
                    "head": get_spec(name).head,
                    "batch": batch,
                    "classes": classes,
                    "device": str(dev),
                    "threads": torch.get_num_threads(),
                    "median_ms": median_ms,
                    "ce_ms": ce_ms,
                    "ratio": median_ms / ce_ms,
                    "min_ms": min_ms,
                    "min_ratio": min_ms / ce_min_ms,
                }
            )
    return rows


def format_bench(rows: list[dict], stat: str = "median") -> str:
    """A plain-text table: one line per loss, `ms (x CE)` per size; `stat`: "median" or "min"."""
    ms_key, ratio_key = ("median_ms", "ratio") if stat == "median" else ("min_ms", "min_ratio")
    sizes = list(dict.fromkeys((r["batch"], r["classes"]) for r in rows))
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    by_key = {(r["loss"], r["batch"], r["classes"]): r for r in rows}
    heads = {r["loss"]: r["head"] for r in rows}
    header = ["loss", "head"] + [f"B={b} C={c}" for b, c in sizes]
    lines = [header]
    for name in losses:
        cells = [name, heads[name]]
        for b, c in sizes:
            r = by_key.get((name, b, c))
            cells.append("-" if r is None else f"{r[ms_key]:.2f} ms ({r[ratio_key]:.2f}x)")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def fmt(cells):
        return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()

    out = [fmt(lines[0]), "  ".join("-" * w for w in widths)]
    out += [fmt(cells) for cells in lines[1:]]
    where = f"device {rows[0]['device']}, {rows[0]['threads']} CPU thread(s)" if rows else ""
    out.append(f"forward+backward, {stat} ms; (x) = ratio to ce at the same size; {where}")
    return "\n".join(out)
