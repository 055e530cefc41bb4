"""Leaflet for the app's offline map pages, from the installed XStatic-Leaflet package.

Imports nothing of the app, so every map page (region search, answers) can use it without
import cycles.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def leaflet_assets() -> tuple[str, str]:
    """Leaflet's JavaScript and CSS, ready to inline in ``<script>`` and ``<style>`` (the
    CSS's control icons as data URIs, so the layer control draws without files)."""
    import xstatic.pkg.leaflet as leaflet

    base = Path(leaflet.BASE_DIR)
    js = (base / "leaflet.js").read_text(encoding="utf-8")
    css = (base / "leaflet.css").read_text(encoding="utf-8")
    for name in ("layers.png", "layers-2x.png", "marker-icon.png"):
        icon = base / "images" / name
        if icon.is_file():
            uri = "data:image/png;base64," + base64.b64encode(icon.read_bytes()).decode("ascii")
            css = css.replace(f"url(images/{name})", f"url({uri})")
    # Inline text must not close its own tag early.
    return js.replace("</script", "<\\/script"), css.replace("</style", "<\\/style")
