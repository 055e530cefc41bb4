"""Every threshold of the spectral rules (index units, metres, square metres) and their
defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpectralThresholds:
    """Every threshold of the spectral rules, in index units, metres or square metres."""

    # --- vegetation -----------------------------------------------------------------
    #: NDVI above which a pixel is vegetation in ordinarily calibrated NAIP/aerial imagery
    #: (leaves reflect NIR strongly: canopy and grass are > 0.2, pavement and roofs < 0.1).
    ndvi_vegetation: float = 0.15
    #: NIR gain differs between acquisitions, so the image's own NDVI split (Otsu) is used
    #: when the pixels below it are demonstrably not green (mean excess green below this):
    #: then the split separates vegetation from pavement, not sunlit from shaded foliage.
    ndvi_split_max_lower_exg: float = 0.045
    #: ...and when the pixels above it are greener than those below by at least this
    #: (otherwise the split divides non-green surfaces, e.g. a harbour with no plants).
    ndvi_split_min_exg_gain: float = 0.02
    #: Range the image's own NDVI split is clipped to.
    ndvi_split_range: tuple[float, float] = (-0.2, 0.6)
    #: Excess-green (2g-r-b on chromaticities) that supports vegetation when NDVI is weak
    #: (leaf-off or poorly balanced NIR): foliage is green or yellow, pavement is grey.
    exg_support: float = 0.045
    #: How far below the NDVI threshold NDVI may be when excess green supports vegetation
    #: (fixed threshold: pavement in calibrated imagery sits below -0.15) ...
    ndvi_support_margin: float = 0.30
    #: ... and when the threshold is the image's own split (NDVI is then informative).
    ndvi_support_margin_split: float = 0.10
    #: Vegetation absorbs red and blue more than green: even with high NDVI a pixel with
    #: less excess green than this is not vegetation (grey or blue-tinted roofs, haze).
    exg_min_vegetation: float = 0.0
    #: Unvegetated holes (m2) inside vegetation filled as noise when NDVI is informative...
    veg_speck_m2: float = 2.0
    #: ...and when it is not (fixed threshold or RGB only): bright crowns, pale grass.
    veg_hole_m2: float = 50.0
    #: Excess green above which a pixel is vegetation in RGB-only imagery.
    exg_vegetation_rgb: float = 0.06
    #: Excess green of dark pixels is noise: below this brightness RGB-only greenness is
    #: not trusted (deep shadow).
    dark_brightness: float = 0.08
    # --- tree canopy vs low vegetation ------------------------------------------------
    #: Side of the square window (m) for local texture: a few tree crowns...
    texture_window_m: float = 5.0
    #: ...measured on pixels of about this size (finer images are block-averaged first:
    #: at 15 cm, grass blades and mowing stripes would look like canopy).
    texture_gsd_m: float = 1.0
    #: Coefficient of variation (local std / local mean) above which vegetation is rough
    #: canopy; lawns and fields are smooth (CV ~ 0.02-0.04), crowns cast shadow (~0.1).
    tree_texture_cv: float = 0.05
    #: Smoothing window (m) for the tree/low-vegetation decision: canopy patches are whole.
    tree_smooth_m: float = 9.0
    #: Minimum area (m2) of a tree-canopy patch (a small crown) and of a grass patch.
    tree_min_m2: float = 12.0
    #: Leaf-off canopy (NIR imagery whose NDVI shows no non-green mode): unvegetated
    #: pixels with NDVI near the threshold where at least this fraction of the
    #: surroundings is rough (bare crowns keep the canopy's texture; pavement is smooth).
    leaf_off_rough_fraction: float = 0.5
    #: ...and whose redness (R-B)/(R+B) is at least this (bark and dead leaves are brown
    #: to grey; glass, metal roofs and haze are bluish).
    leaf_off_min_redness: float = -0.05
    # --- water ------------------------------------------------------------------------
    #: McFeeters NDWI above which a pixel may be water (water absorbs NIR; G >> NIR).
    ndwi_water: float = 0.30
    #: Mean NDWI a water body must reach: open water is ~0.5-0.9, while pavement with a
    #: weak NIR response stays below ~0.42 (NIR/G > 0.4).
    ndwi_water_body: float = 0.45
    #: Components darker than this fraction of the image's median brightness are shadow
    #: unless they are large (``water_dark_min_m2``): shadows have high NDWI too.
    water_shadow_relative_brightness: float = 0.5
    #: Minimum area (m2) of a very dark water body (deep shadows are rarely this large).
    water_dark_min_m2: float = 300.0
    #: Largest local std of NIR (0..1) of open water: water is smooth, shadows in canopy
    #: are not.
    water_max_nir_std: float = 0.06
    #: Minimum area (m2) of a water body (smaller blobs are shadows or dark roofs).
    water_min_m2: float = 20.0
    #: RGB-only water: brightness range of open water (shadows are darker, roofs brighter).
    water_rgb_brightness: tuple[float, float] = (0.22, 0.60)
    #: RGB-only water: green and blue both exceed red by this factor (blue-green water).
    water_rgb_bluegreen: float = 1.04
    #: RGB-only water: largest local coefficient of variation of brightness (smooth).
    water_rgb_max_cv: float = 0.10
    #: RGB-only water: minimum area (m2); only sizeable smooth blue-green areas count.
    water_rgb_min_m2: float = 150.0
    #: Unvegetated pixels darker than this fraction of the image's median brightness are
    #: deep shadow (the surface under them is unknown).
    shadow_relative_brightness: float = 0.45
    # --- bare soil ----------------------------------------------------------------------
    #: Redness (R-B)/(R+B) above which unvegetated ground is soil or sand (brown/yellow);
    #: asphalt and concrete are grey (|redness| < 0.08).
    bare_redness: float = 0.16
    #: Minimum brightness of bare soil (darker red-brown is shadowed roof or wet ground).
    bare_min_brightness: float = 0.18
    #: Minimum area (m2) of a bare-soil patch; smaller brown blobs are roofs or cars.
    bare_min_m2: float = 30.0
    # --- impervious objects -------------------------------------------------------------
    #: Resolution (m) at which shape rules run (finer images are block-averaged to it).
    object_gsd_m: float = 0.5
    #: Holes smaller than this (m2) in paved surface are cars, crowns, markings: filled.
    impervious_hole_m2: float = 20.0
    #: Segmentation of the paved surface: seeds are pixels whose colour gradient (bands
    #: scaled to the image's 99th percentile) is below this (flat roof or road surface)...
    segment_seed_gradient: float = 0.02
    #: ...and neighbouring segments merge when at least ``segment_merge_weak_share`` of
    #: their shared boundary has a gradient below ``segment_merge_gradient`` and their
    #: mean colours differ by less than ``segment_merge_color`` (per band).
    segment_merge_gradient: float = 0.08
    segment_merge_weak_share: float = 0.4
    segment_merge_color: float = 0.08
    #: A road segment's centre line is at least this long (m)...
    road_min_length_m: float = 40.0
    #: ...its mean width (area / centre-line length) at most this (m; avenues ~30 m)...
    road_max_width_m: float = 28.0
    #: ...and at least this (m): thinner strips are mixed pixels along field and water
    #: edges, not a carriageway (a footpath narrower than this is not resolved).
    road_min_width_m: float = 2.5
    #: ...and it is at least this many times longer than wide.
    road_min_elongation: float = 4.0
    #: Pixels on a straight paved run this long (m) in some direction and at most
    #: ``road_max_width_m`` across are road evidence even when shadows cut the segment.
    road_run_length_m: float = 40.0
    #: Fraction of a segment's pixels with run evidence that makes it road.
    road_run_fraction: float = 0.6
    #: Directions sampled for paved runs (22.5 degrees apart).
    road_angles: int = 8
    #: Minimum area (m2) of a road component (shorter strips are driveways or paths).
    road_min_m2: float = 40.0
    #: Building footprint area range (m2): a garage to a large warehouse.
    building_min_m2: float = 20.0
    building_max_m2: float = 40_000.0
    #: Minimum compactness of a building (area / area of the ellipse with the same second
    #: moments: 0.95 for a rectangle, ~0.75 for an L-shaped house, lower for networks).
    building_min_fill: float = 0.7
    #: Largest length/width ratio of a building footprint (longer strips are paths).
    building_max_aspect: float = 4.0
    #: Largest fraction of busy pixels (see ``parking_texture_cv``) on a roof: roofs are
    #: uniform planes, clumps of bare crowns and car-filled lots are not.
    building_max_busy: float = 0.5
    #: Roof candidates whose 2 m surroundings are nearly all tree canopy are bright
    #: crowns or gaps in a forest, not buildings (suburban houses among trees measured
    #: 0.1-0.55 canopy around them).
    building_max_tree_ring: float = 0.7
    #: Open paved areas at least this large (m2) that are darker than roofs or busy with
    #: cars are parking lots...
    parking_min_m2: float = 150.0
    #: ...and are not ragged networks (compactness as for buildings).
    parking_min_fill: float = 0.5
    #: Local coefficient of variation (2 m window) above which paved surface is busy
    #: (cars, markings) rather than a uniform roof...
    parking_texture_cv: float = 0.12
    #: ...measured as the share of busy pixels within this window (m)...
    parking_context_m: float = 6.0
    #: ...and the mean share that marks a parking lot.
    parking_busy_fraction: float = 0.35
    #: Brightness, relative to the image's median paved brightness, below which a large
    #: open paved area is asphalt (parking) rather than a roof.
    parking_relative_brightness: float = 0.9
    # --- built-up land ------------------------------------------------------------------
    #: Scale (m) over which impervious density is measured (a city block; box filter of
    #: twice this size applied twice).
    built_up_sigma_m: float = 15.0
    #: Impervious density above which land is built up (suburbs ~0.35-0.5, towns more).
    built_up_density: float = 0.35
    #: Minimum area (m2) of a built-up patch.
    built_up_min_m2: float = 400.0


DEFAULT_THRESHOLDS = SpectralThresholds()
