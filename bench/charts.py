"""The main chart (benchmark.png): per-request overhead of every layer, with the floors.

One panel per cache kind (memcached with the peers that have no cache; Redis), one
group of bars per scenario, log scale; a dashed black line marks the scenario's floor.
The curves have their own charts (``bench/curves.py``).
"""

from __future__ import annotations

from pathlib import Path

import peers
from measure import Results
from measure import overhead
from measure import scenario_for


def chart(results: Results, path: Path, quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in results if k != "untouched"]
    panels = [
        ("memcached and peers without a cache", "memcached", list(peers.MEMCACHED_TABLE[2:])),
        ("Redis", "redis", list(peers.REDIS_TABLE[2:])),
    ]
    panels = [
        (t, kind, [n for n in ns if any(n in results[k] for k in keys)]) for t, kind, ns in panels
    ]
    panels = [(t, kind, ns) for t, kind, ns in panels if ns]
    fig, axes = plt.subplots(len(panels), 1, figsize=(15, 4.8 * len(panels)), squeeze=False)
    colors = [plt.get_cmap("tab10")(i) for i in range(10)]
    for ax, (title, kind, names) in zip(axes[:, 0], panels, strict=True):
        labelled = False
        for j, key in enumerate(keys):
            op = scenario_for(key).op
            floor = f"floor_cookie_{op}" if key.startswith("small_") else f"floor_{op}_{kind}"
            value = overhead(results, key, floor)
            if value is not None:
                label = None if labelled else "floor"
                ax.hlines(max(value, 0.1), j - 0.45, j + 0.45, colors="black", linewidth=1.2,
                          linestyles="--", label=label, zorder=3)  # fmt: skip
                labelled = True
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            xs, ys = [], []
            for j, key in enumerate(keys):
                value = overhead(results, key, name)
                if value is not None:
                    xs.append(j + (i - (len(names) - 1) / 2) * width)
                    ys.append(max(value, 0.1))
            ax.bar(xs, ys, width, label=peers.LAYER_TITLES[name], color=colors[i % 10])
        ax.set_yscale("log")
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels(
            [scenario_for(k).title for k in keys], rotation=30, ha="right", fontsize=7
        )
        ax.set_ylabel("µs over the bare app (log)")
        ax.set_title(f"Per-request overhead, {title} (lower is better)", fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=4)
    if quick:
        fig.suptitle("--quick: timings not meaningful")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
