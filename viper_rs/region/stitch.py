"""Stitching: chip-core components merged across core borders into whole objects.

Each chip contributes the components of its core (``add``); components of neighbouring
cores that touch across a border (8-neighbourhood with connectivity 2, 4 with 1; with
instance ids, only parts of the same instance) become one object (union-find). Detectors
whose instance ids are global (the oracle's object ids) merge every part of an id, as one
image does. Only the parts' cropped masks are kept, never a full-size mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.measure import regionprops

from viper_rs.core import budget
from viper_rs.core.image import Image
from viper_rs.core.regions import Region
from viper_rs.vision.components import crop_area, crop_region, in_reading_order, label_components


@dataclass
class Part:
    """One component of one chip core: cropped mask at (r0, c0) on the working grid."""

    chip: str
    r0: int
    c0: int
    crop: np.ndarray
    score_sum: float
    instance: int


@dataclass
class _Edges:
    """The four border lines of a chip core as global part ids (0 = none) and instance ids."""

    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray
    inst: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None


class Stitcher:
    """Collects chip-core components for one query and merges them into objects."""

    def __init__(self, connectivity: int = 2, global_instances: bool = False) -> None:
        self.connectivity = connectivity
        self.global_instances = global_instances
        self.parts: list[Part] = [Part("", 0, 0, np.zeros((0, 0), bool), 0.0, 0)]  # id 0 unused
        self.edges: dict[tuple[int, int], _Edges] = {}
        self.cores: dict[tuple[int, int], tuple[int, int, int, int]] = {}

    def add(self, index: tuple[int, int], chip_id: str, core: tuple[int, int, int, int],
            fg: np.ndarray, scores: np.ndarray, instances: np.ndarray | None) -> None:
        """Add a chip core's foreground ``fg`` (core-sized) with its scores and optional
        instance label image."""
        r0, c0 = core[0], core[1]
        if instances is not None:
            inst = np.where(fg, instances, 0)
            ids, local = np.unique(inst, return_inverse=True)
            local = local.reshape(inst.shape)
            if ids[0] != 0:  # no background pixel: shift so that 0 stays background
                ids = np.concatenate([[0], ids])
                local = local + 1
            labels = local
        else:
            inst = None
            ids = None
            labels = label_components(fg, self.connectivity)
        base = len(self.parts)
        gmap = np.zeros(int(labels.max()) + 1, dtype=np.int64)
        for prop in regionprops(labels):
            budget.check()
            pr0, pc0, pr1, pc1 = prop.bbox
            crop = np.ascontiguousarray(prop.image)
            gmap[prop.label] = len(self.parts)
            self.parts.append(Part(
                chip=chip_id, r0=r0 + pr0, c0=c0 + pc0, crop=crop,
                score_sum=float(scores[pr0:pr1, pc0:pc1][crop].sum()),
                instance=int(ids[prop.label]) if ids is not None else 0,
            ))
        del base
        g = gmap[labels]
        edges_inst = None
        if inst is not None:
            edges_inst = (inst[0].copy(), inst[-1].copy(), inst[:, 0].copy(), inst[:, -1].copy())
        self.edges[index] = _Edges(g[0].copy(), g[-1].copy(), g[:, 0].copy(), g[:, -1].copy(),
                                   edges_inst)
        self.cores[index] = core

    # ------------------------------------------------------------------ merging
    def objects(self) -> list[list[Part]]:
        """Parts grouped into objects."""
        parent = np.arange(len(self.parts))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = int(parent[i])
            return i

        def union(a: np.ndarray, b: np.ndarray) -> None:
            for x, y in zip(a.tolist(), b.tolist(), strict=True):
                rx, ry = root(x), root(y)
                if rx != ry:
                    parent[max(rx, ry)] = min(rx, ry)

        if self.global_instances:
            first: dict[int, int] = {}
            for k, p in enumerate(self.parts[1:], 1):
                if p.instance in first:
                    union(np.array([first[p.instance]]), np.array([k]))
                else:
                    first[p.instance] = k
        else:
            for a, b in self._border_pairs():
                union(a, b)
        groups: dict[int, list[Part]] = {}
        for k in range(1, len(self.parts)):
            groups.setdefault(root(k), []).append(self.parts[k])
        return list(groups.values())

    def _border_pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(ids, ids) pairs of parts touching across core borders."""
        if not self.edges:
            return []
        rows = sorted({i for i, _ in self.cores})
        cols = sorted({j for _, j in self.cores})
        n_i, n_j = max(rows) + 1, max(cols) + 1
        height = {i: self.cores[(i, j)][2] - self.cores[(i, j)][0] for (i, j) in self.cores}
        width = {j: self.cores[(i, j)][3] - self.cores[(i, j)][1] for (i, j) in self.cores}
        out = []

        def line(idx: tuple[int, int], side: str, length: int) -> tuple[np.ndarray, np.ndarray]:
            e = self.edges.get(idx)
            if e is None:
                z = np.zeros(length, dtype=np.int64)
                return z, z
            k = ("top", "bottom", "left", "right").index(side)
            ids = getattr(e, side)
            inst = e.inst[k] if e.inst is not None else np.zeros(length, dtype=np.int64)
            return ids, inst

        # vertical borders: right line of column j against the left line of column j + 1
        for j in range(n_j - 1):
            parts_l, parts_r = [], []
            for i in range(n_i):
                hh = height.get(i, 0)
                parts_l.append(line((i, j), "right", hh))
                parts_r.append(line((i, j + 1), "left", hh))
            out.extend(self._links(parts_l, parts_r))
        # horizontal borders: bottom line of row i against the top line of row i + 1
        for i in range(n_i - 1):
            parts_t, parts_b = [], []
            for j in range(n_j):
                ww = width.get(j, 0)
                parts_t.append(line((i, j), "bottom", ww))
                parts_b.append(line((i + 1, j), "top", ww))
            out.extend(self._links(parts_t, parts_b))
        return out

    def _links(self, a_parts: list, b_parts: list) -> list[tuple[np.ndarray, np.ndarray]]:
        """Touching pairs between two aligned border lines (same place, and diagonal
        neighbours with connectivity 2)."""
        a = np.concatenate([p[0] for p in a_parts])
        ai = np.concatenate([p[1] for p in a_parts])
        b = np.concatenate([p[0] for p in b_parts])
        bi = np.concatenate([p[1] for p in b_parts])
        shifts = [(slice(None), slice(None))]
        if self.connectivity == 2 and len(a) > 1:
            shifts += [(slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1))]
        out = []
        for sa, sb in shifts:
            x, y, xi, yi = a[sa], b[sb], ai[sa], bi[sb]
            hit = (x > 0) & (y > 0) & (xi == yi)
            if hit.any():
                out.append((x[hit], y[hit]))
        return out


def build_regions(
    objects: list[list[Part]], image: Image, label: str, query: str, detector: str,
    min_area_m2: float = 0.0,
) -> list[Region]:
    """One Region per object (:func:`~viper_rs.vision.components.crop_region`, as for one
    image): cropped mask on the working grid, polygon in the working CRS, true ground area
    and mean score; objects below ``min_area_m2`` are dropped."""
    out: list[Region] = []
    for parts in objects:
        budget.check()
        r0 = min(p.r0 for p in parts)
        c0 = min(p.c0 for p in parts)
        r1 = max(p.r0 + p.crop.shape[0] for p in parts)
        c1 = max(p.c0 + p.crop.shape[1] for p in parts)
        crop = np.zeros((r1 - r0, c1 - c0), dtype=bool)
        for p in parts:
            crop[p.r0 - r0 : p.r0 - r0 + p.crop.shape[0], p.c0 - c0 : p.c0 - c0 + p.crop.shape[1]] |= p.crop
        area = crop_area(image, crop, r0)
        if area < min_area_m2:
            continue
        n = int(crop.sum())
        extra: dict[str, object] = {"chips": sorted({p.chip for p in parts})}
        if parts[0].instance:
            extra["instance"] = parts[0].instance
        out.append(crop_region(
            image, crop, (r0, c0), area=area,
            score=sum(p.score_sum for p in parts) / n if n else 0.0,
            label=label, query=query, detector=detector, extra=extra,
        ))
    return in_reading_order(out)
