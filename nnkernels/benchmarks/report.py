"""The bench report: the table of a ``run.run_bench`` result, and its plot.

``format_report`` prints the machine, the floors the run measured, one row
per (kernel, shape, dtype) with its time, rate, floor and speed-ups, and the
notes; a ratio whose timings stalled (max/median above
``timing.STALL_RATIO``) is shown as ``stalled`` with a legend line, and the
last line says how long the run took. ``plot_report`` draws the speed-ups
(needs matplotlib).
"""

import textwrap

import numpy as np

from .timing import STALL_RATIO

__all__ = ["format_report", "plot_report"]


def _fmt_time(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1.0:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _fmt(v, spec, suffix=""):
    return "-" if v is None else format(v, spec) + suffix


def _fmt_duration(s):
    """``2m51s``, or ``38.2s`` under a minute."""
    if s < 59.95:  # what rounds to 60.0s is 1m00s
        return f"{s:.1f}s"
    m, s = divmod(round(s), 60)
    return f"{m}m{s:02d}s"


STALL_MARK = "stalled"  # in place of a ratio whose timings stalled


def _fmt_ratio(r, key, other, spec):
    """The speed-up ``r[key]``, or ``stalled`` when nnkernels' or ``other``'s
    timings stalled (max/median above STALL_RATIO)."""
    if r[key] is not None and {"nnkernels", other} & set(r.get("stalled_backends", ())):
        return STALL_MARK
    return _fmt(r[key], spec, "x")


def _shape_str(shape):
    return "(" + ", ".join(str(s) for s in shape) + ")"


_PROBE_TITLES = {
    "numpy_add": "NumPy add a+b->c, 3 arrays",
    "numpy_copy": "NumPy copyto, 2 arrays",
    "nnkernels_relu_backward": "nnkernels relu_backward, 3 arrays",
}


def format_report(res):
    """The bench table (a str) for a ``run_bench`` result."""
    lines = []
    m, s, bw = res["machine"], res["settings"], res["bandwidth"]
    version = res["nnkernels"].get("version", "?")
    lines.append(f"nnkernels {version} bench{' (--quick)' if s['quick'] else ''}")
    lines.append(f"machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['platform']}")
    soft = f"Python {m['python']}, NumPy {m['numpy']}"
    if res["torch"]:
        soft += f", torch {res['torch']}"
    lines.append(f"software: {soft}")
    thr = f"threads: nnkernels {s['threads']}"
    if s["torch_threads"] is not None:
        thr += f", torch {s['torch_threads']}"
    thr += "; NumPy (reference) runs element-wise work on 1 thread"
    blas = res.get("blas")
    blas_threads = "?" if s.get("blas_threads") is None else s["blas_threads"]
    if blas is not None:
        thr += f", its BLAS on {blas_threads} thread(s)"
    lines.append(thr)
    lines.append("memory bandwidth (64 MiB float32 arrays, median of several runs):")
    for name, p in bw["probes"].items():
        title = _PROBE_TITLES.get(name, name)
        nthr = "?" if p["threads"] is None else p["threads"]
        mark = "  <- floor" if name == bw["floor"] else ""
        lines.append(f"  {title:<36} {nthr} thread(s) {p['gbps']:7.1f} GB/s{mark}")
    lines.append(f"floor = bytes moved (inputs read once + outputs written once) / "
                 f"{bw['floor_gbps']:.1f} GB/s ({_PROBE_TITLES.get(bw['floor'], bw['floor'])})")
    if blas is not None:
        lines.append(f"BLAS rate ({blas['what']}, {blas['n']}x{blas['n']} matrices, median of "
                     f"{blas['repeat']} runs, {blas_threads} thread(s)):")
        for name, by_dtype in blas.get("providers", {}).items():
            rates = ", ".join(f"{d} {r['gflops']:.1f} GFLOP/s" for d, r in by_dtype.items())
            lines.append(f"  {name:<10} {rates}")
        lines.append("GEMM floor (the rows with GFLOP/s) = matrix-product FLOPs / the best "
                     "provider's rate for the row's dtype; [name] = the row's BLAS provider")
    lines.append("time = median per call; nnkernels writes into a preallocated out= "
                 "buffer, the reference allocates; GB = 1e9 bytes")
    lines.append("")

    with_torch = s["compare_torch"] and res["torch"] is not None
    with_flops = any(r.get("flops") is not None for r in res["rows"])
    head = ["kernel", "shape", "dtype", "time", "GB/s"] + ["GFLOP/s"] * with_flops
    head += ["floor", "%floor", "vs ref"]
    if with_torch:
        head += ["torch", "vs torch"]
    table = []
    for r in res["rows"]:
        name = r["kernel"] + (f" [{r['blas']}]" if r.get("blas") else "")
        cells = [name, _shape_str(r["shape"]), r["dtype"], _fmt_time(r["time_s"]),
                 _fmt(r["gbps"], ".1f")]
        if with_flops:
            cells.append(_fmt(r["gflops"], ".1f"))
        cells += [_fmt_time(r["floor_s"]), _fmt(r["pct_floor"], ".0f", "%"),
                  _fmt_ratio(r, "speedup_reference", "reference", ".1f")]
        if with_torch:
            cells += [_fmt_time(r["torch_s"]), _fmt_ratio(r, "speedup_torch", "torch", ".2f")]
        table.append(cells)
    widths = [max(len(c[i]) for c in [head] + table) for i in range(len(head))]
    left = {0, 1, 2}

    def fmt_line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines.append(fmt_line(head))
    lines.append(fmt_line(["-" * w for w in widths]))
    prev_dtype = None
    for r, cells in zip(res["rows"], table):
        if prev_dtype is not None and r["dtype"] != prev_dtype:
            lines.append("")
        lines.append(fmt_line(cells))
        prev_dtype = r["dtype"]
    lines.append("")
    lines.append("vs ref = reference time / nnkernels time"
                 + ("; vs torch = torch time / nnkernels time" if with_torch else "")
                 + "; %floor above 100% means the data stayed in cache"
                 + (" (GFLOP/s rows: the products ran faster than the probe)"
                    if with_flops else ""))
    if any(STALL_MARK in cells for cells in table):
        lines.append(f"{STALL_MARK} = max/median or median/min > {STALL_RATIO:g} in the samples "
                     "of nnkernels or the other backend: calls stalled; the ratio is unreliable")
    if with_flops:
        counted = res.get("flops_counted", {})
        lines.extend(textwrap.wrap("FLOPs counted: " + "; ".join(
            f"{k}: {v}" for k, v in counted.items()), width=100, subsequent_indent="  "))
    if with_torch:
        ops = res["torch_ops"]
        lines.extend(textwrap.wrap("torch runs: " + "; ".join(f"{k}: {v}" for k, v in ops.items()),
                                   width=100, subsequent_indent="  "))
    for note in res["notes"]:
        lines.append("note: " + note)
    for r in res["rows"]:
        for backend, err in r["errors"].items():
            lines.append(f"error: {r['kernel']} {_shape_str(r['shape'])} {r['dtype']} "
                         f"[{backend}]: {err}")
    if res.get("elapsed_s") is not None:
        lines.append(f"bench: {len(res['rows'])} rows in {_fmt_duration(res['elapsed_s'])}")
    return "\n".join(lines)


def plot_report(res, path):
    """Draw the speed-ups of a ``run_bench`` result into ``path`` (needs matplotlib).

    One panel per dtype; per row, a bar for the speed-up over the reference
    and one over torch (when measured), on a log scale.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    rows = [r for r in res["rows"] if r["time_s"] is not None]
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    labels = list(dict.fromkeys(f"{r['kernel']} {_shape_str(r['shape'])}" for r in rows))
    series = [("speedup_reference", "vs reference (NumPy)")]
    if any(r["speedup_torch"] is not None for r in rows):
        series.append(("speedup_torch", "vs torch"))
    ypos = np.arange(len(labels))
    height = 0.8 / len(series)
    fig, axes = plt.subplots(
        1, len(dtypes), sharex=True, sharey=True, squeeze=False,
        figsize=(5.0 * len(dtypes) + 2.5, 1.5 + 0.17 * len(labels) * len(series)))
    for ax, dtype in zip(axes[0], dtypes):
        by_label = {f"{r['kernel']} {_shape_str(r['shape'])}": r
                    for r in rows if r["dtype"] == dtype}
        for i, (key, name) in enumerate(series):
            vals = [(by_label.get(lab) or {}).get(key) or 0.0 for lab in labels]
            bars = ax.barh(ypos + i * height, vals, height=height, label=name)
            ax.bar_label(bars, labels=[f"{v:.2g}x" if v else "" for v in vals],
                         fontsize=6, padding=2)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.grid(axis="x", which="major", alpha=0.3)
        ax.set_title(dtype, fontsize=9)
        ax.set_xlabel("speed-up of nnkernels (log scale)", fontsize=8)
    ax0 = axes[0][0]
    ax0.set_yticks(ypos + height * (len(series) - 1) / 2)
    ax0.set_yticklabels(labels, fontsize=7)
    ax0.invert_yaxis()
    axes[0][-1].legend(loc="lower right", fontsize=7)
    thr = res["settings"]["threads"]
    fig.suptitle(f"nnkernels {res['nnkernels'].get('version', '')}: speed-up over the "
                 f"reference and torch, {thr} thread(s), {res['machine']['cpu']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
