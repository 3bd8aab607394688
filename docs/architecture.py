"""Draw ``docs/architecture.png``: the data flow of simaq-factory, from config to trained model.

Run ``python docs/architecture.py [OUT.png]`` after changing the layout of the tree; the picture is
drawn from the tables :data:`BOX_TABLE` and :data:`ARROWS` below (no project import, matplotlib
only). Each box names its module; boxes drawn with an orange border run on Ray, everything else is a
plain function that would run the same without it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch  # noqa: E402

#: Fill colour of each kind of box.
COLOURS = {
    "config": "#e3ecf7",
    "stage": "#e2f2e0",
    "build": "#fdf1dc",
    "store": "#f1e6d6",
    "read": "#f7e1e1",
    "model": "#ece3f5",
}
#: Legend text of each kind.
KINDS = {
    "config": "config",
    "stage": "per-sample stage",
    "build": "dataset build",
    "store": "storage",
    "read": "reads datasets (trusts nothing)",
    "model": "models",
}
RAY_EDGE = "#e07b00"

#: Lanes, top to bottom: (label, y of the lane's bottom, height), in axes units (0..100 × 0..70).
LANES = [
    ("config", 60.5, 8.5),
    ("stages:\nplain\nfunctions,\nno Ray", 45.5, 13.5),
    ("dataset build", 32.5, 11.5),
    ("storage:\nthe typed\ncontract", 16.5, 14.5),
    ("models", 0.5, 14.5),
]

#: The boxes, one a paragraph: a line ``name x y width height kind ray title`` (the lower left
#: corner in axes units; ``ray`` or ``-``: runs on Ray), then the body under the title, one indented
#: line per line of text. ``sample`` is the container of the three stages (no title, no body).
BOX_TABLE = """
presets   10  62    16  5.5   config  -    presets
    factory/presets/*.yaml
set       29  62    15  5.5   config  -    --set KEY=VALUE
    factory/config.py
config    48  61.5  24  6.5   config  -    one SimConfig
    factory/config.py: strict pydantic,
    sections owned by the stages; sha256
rng       76  61.5  22  6.5   config  -    random streams
    factory/rng.py: SeedSequence
    (seed, sample index, stage)
sample    10  46.5  88  11.5  stage   -
phantom   12  47.5  22  8     stage   -    phantom
    factory/phantom: plan (numpy)
    → voxelize (torch)
    LAC + labels (Z, Y, X)
acq       40  47.5  28  8     stage   -    acquisition
    factory/acquisition/simulate.py:
    CHAIN of effects, in order: tilt, volume,
    projection, motion, ice, mount, detector
recon     74  47.5  22  8     stage   -    reconstruction
    factory/acquisition/recon.py
    + factory/tomo: FBP / SIRT,
    rank normalisation
executor  10  34    23  8     build   ray  executors
    factory/dataset/executor.py:
    local loop | Ray actor pool
    (bounded in-flight shards)
builder   40  34    28  8     build   -    shard builder
    factory/dataset/shards.py: encode .npy[.gz],
    tar with fixed mtime, sha256,
    temp name + commit, record
generate  72  34    26  8     build   -    generate
    factory/dataset/generate.py: plan, resume,
    index.parquet, card (card.py),
    manifest.json last
storage   10  18    34  11.5  store   -    dataset root: local or s3://
    factory/dataset/storage.py (pyarrow.fs)
    manifest.json  fields, shards + sha256
    shards/{split}-NNNNNN.tar
    index.parquet (schemas/index.py)
    README.md + preview.png
reader    48  18    24  11.5  read    -    safe readers
    factory/dataset/manifest.py:
    read_manifest, iter_samples;
    sha256 before use, .npy headers
    checked, links refused,
    no pickles
tools     76  18    22  11.5  read    -    verify / inspect / publish
    factory/dataset/tools.py
    publish: copy, re-verify,
    manifest last
data      10  2     18  11    model   -    streaming reader
    models/order.py + data.py:
    global order, seek reads,
    slice stacks, augment
train     31  2     18  11    model   ray  Ray Train workers
    models/train.py:
    TorchTrainer, DDP,
    2.5D U-Net (unet.py)
ckpt      52  2     14  11    model   -    checkpoints
    models/infer.py: local
    or s3://, weights +
    stream position
eval      69  1     29  5.5   model   -    evaluate / segment
    models/evaluate.py, segment.py, infer.py
fidelity  69  7.5   29  5.5   read    -    fidelity vs a real tomogram
    factory/fidelity (--set suggestions)
"""


def _parse_boxes(table: str) -> dict[str, tuple]:
    """:data:`BOX_TABLE` as ``name: (x, y, width, height, kind, title, body, on_ray)``."""
    heads: dict[str, list] = {}
    bodies: dict[str, list[str]] = {}
    for line in table.strip("\n").splitlines():
        if line.startswith("    "):  # a line of the last box's body
            bodies[next(reversed(bodies))].append(line[4:])
            continue
        name, *nums, kind, ray, title = (line.split(maxsplit=7) + [""])[:8]
        heads[name] = [*map(float, nums), kind, title, ray == "ray"]
        bodies[name] = []
    return {n: (*h[:6], "\n".join(bodies[n]), h[6]) for n, h in heads.items()}


#: name: (x, y, width, height, kind, title, body, on_ray), from :data:`BOX_TABLE`.
BOXES = _parse_boxes(BOX_TABLE)

#: (from, to, label, from side, to side, shift of the start, shift of the end); sides are n, s, e, w
#: of the box, shifts along that side (axes units).
ARROWS = [
    ("presets", "set", "", "e", "w"),
    ("set", "config", "", "e", "w"),
    ("config", "sample", "", "s", "n"),
    ("rng", "sample", "", "s", "n"),
    ("phantom", "acq", "", "e", "w"),
    ("acq", "recon", "", "e", "w"),
    ("executor", "builder", "shard ranges", "e", "w"),
    ("sample", "builder", "fields + meta", "s", "n"),
    ("builder", "generate", "records", "e", "w"),
    ("builder", "storage", "", "s", "n", -4, 8),
    ("generate", "storage", "", "s", "n", 0, 14),
    ("storage", "reader", "", "e", "w"),
    ("reader", "tools", "", "e", "w"),
    ("reader", "data", "", "s", "n", -6, 0),
    ("data", "train", "", "e", "w"),
    ("train", "ckpt", "", "e", "w"),
    ("ckpt", "eval", "", "e", "w"),
    ("reader", "fidelity", "", "s", "n", 6, -6),
]


def _anchor(name: str, side: str, shift: float = 0.0) -> tuple[float, float]:
    """Middle of one side (``n``, ``s``, ``e``, ``w``) of a box, moved ``shift`` along it (axes
    units)."""
    x, y, w, h = BOXES[name][:4]
    return {
        "n": (x + w / 2 + shift, y + h),
        "s": (x + w / 2 + shift, y),
        "e": (x + w, y + h / 2 + shift),
        "w": (x, y + h / 2 + shift),
    }[side]


def _draw_box(ax, name: str) -> None:
    """One rounded box: bold title on top, module names and notes under it."""
    x, y, w, h, kind, title, body, on_ray = BOXES[name]
    edge = RAY_EDGE if on_ray else "#555555"
    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle="round,pad=0.0,rounding_size=0.8",
            facecolor=COLOURS[kind],
            edgecolor=edge,
            linewidth=2.6 if on_ray else 0.9,
            zorder=1 if name == "sample" else 2,
        )
    )
    if name == "sample":
        ax.text(
            x + w / 2,
            y + h - 0.3,
            "factory/sample.py  simulate_sample(config, seed, index): one sample's whole life",
            ha="center",
            va="top",
            fontsize=8.5,
            style="italic",
            zorder=3,
        )
        return
    ax.text(x + w / 2, y + h - 0.7, title, ha="center", va="top", fontsize=9.5, weight="bold")
    ax.text(x + w / 2, y + h - 2.4, body, ha="center", va="top", fontsize=7.8, linespacing=1.25)
    if on_ray:
        ax.text(
            x + w - 0.6,
            y + 0.5,
            "Ray",
            ha="right",
            va="bottom",
            fontsize=8,
            weight="bold",
            color=RAY_EDGE,
        )


def _draw_arrow(
    ax, a: str, b: str, label: str, sa: str, sb: str, da: float = 0.0, db: float = 0.0
) -> None:
    """An arrow from side ``sa`` of box ``a`` to side ``sb`` of box ``b`` (shifted ``da``, ``db``
    along them), labelled."""
    p, q = _anchor(a, sa, da), _anchor(b, sb, db)
    if a == "sample":  # from the container down to the builder: start above the target
        p = (q[0], p[1])
    if b == "sample":  # into the container: straight down
        q = (p[0], q[1])
    ax.add_patch(
        FancyArrowPatch(
            p, q, arrowstyle="-|>", mutation_scale=13, linewidth=1.3, color="#333333", zorder=4
        )
    )
    if label:
        mx, my = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
        if p[0] == q[0]:  # vertical: beside it
            ax.text(mx + 0.6, my, label, ha="left", va="center", fontsize=7.5, color="#333333")
        else:
            ax.text(mx, my + 0.5, label, ha="center", va="bottom", fontsize=7.5, color="#333333")


def draw(out: str | Path) -> Path:
    """Draw the figure and save it as a PNG at ``out`` (about 1650 × 1150 pixels)."""
    fig, ax = plt.subplots(figsize=(15, 10.5), dpi=110)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 70)
    ax.set_axis_off()
    for k, (label, y, h) in enumerate(LANES):
        ax.add_patch(
            FancyBboxPatch(
                (0.3, y),
                99.4,
                h,
                boxstyle="square,pad=0",
                facecolor="#f6f6f6" if k % 2 == 0 else "white",
                edgecolor="none",
                zorder=0,
            )
        )
        ax.text(0.8, y + h / 2, label, ha="left", va="center", fontsize=8.5, color="#444444")
    for name in BOXES:
        _draw_box(ax, name)
    for arrow in ARROWS:
        _draw_arrow(ax, *arrow)
    handles = [Patch(facecolor=c, edgecolor="#555555", label=KINDS[k]) for k, c in COLOURS.items()]
    handles.append(Patch(facecolor="white", edgecolor=RAY_EDGE, linewidth=2.6, label="runs on Ray"))
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncols=len(handles),
        fontsize=8.5,
        frameon=False,
    )
    ax.set_title(
        "simaq-factory: config → stages → shards → storage → training "
        "(the Ray layer only schedules)",
        fontsize=12,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(draw(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("architecture.png")))
