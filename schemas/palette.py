"""One label palette for every picture: a fixed colour per class *name*, background black.

The colour follows the name, not the id, so that a class looks the same in every scheme
(``cytoplasm`` of ``full`` and ``cell`` of ``simaq4`` share a colour) and in every command
(``simulate`` montages, ``preview``, dataset cards, evaluation pictures).
"""

from __future__ import annotations

CLASS_COLORS: dict[str, str] = {
    "background": "#000000",
    "cytoplasm": "#1f77b4",
    "cell": "#1f77b4",
    "vacuole": "#2ca02c",
    "lipid_droplet": "#ff7f0e",
    "nucleus": "#9467bd",
    "mitochondrion": "#d62728",
    "cell_wall": "#17becf",
    "capillary": "#7f7f7f",
    "medium": "#8c564b",
}
_SPARE = ("#e377c2", "#bcbd22", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5")


def class_colors(class_names: list[str]) -> list[str]:
    """Hex colours of ``class_names`` (in id order); unknown names get spare colours in turn."""
    spare = iter(_SPARE * (1 + len(class_names) // len(_SPARE)))
    return [CLASS_COLORS.get(n) or next(spare) for n in class_names]


def label_cmap(class_names: list[str]):
    """``(cmap, norm)`` for ``imshow`` of a label image whose ids index ``class_names``."""
    import numpy as np
    from matplotlib.colors import BoundaryNorm, ListedColormap

    cmap = ListedColormap(class_colors(class_names), name="simaq-classes")
    norm = BoundaryNorm(np.arange(-0.5, len(class_names) + 0.5), cmap.N)
    return cmap, norm


def legend_handles(class_names: list[str]) -> list:
    """Matplotlib legend patches ``"ID name"`` for every class, in the palette's colours."""
    from matplotlib.patches import Patch

    colors = class_colors(class_names)
    return [
        Patch(color=c, label=f"{i} {n}")
        for i, (n, c) in enumerate(zip(class_names, colors, strict=True))
    ]
