"""The tables of ``python -m eval.buildings``: on the terminal and in Markdown (for
docs/buildings.md)."""

from __future__ import annotations

from eval.buildings_metrics import BEFORE, DETECTORS, PAN_GROUP, RGB_GROUP


def _pct(v: float | None, nd: int = 0) -> str:
    return "-" if v is None else f"{100 * v:.{nd}f}%"


def _num(v: float | None, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


HEAD = (f"{'group':<22}{'tiles':>6}{'err':>5}{'count':>7}{'pred':>7}{'exact':>7}{'±20%/2':>8}"
        f"{'MAE':>7}{'area med':>10}{'area mean':>10}{'presence':>10}{'IoU':>6}{'IoU px':>8}")


def _line(name: str, s: dict) -> str:
    return (f"{name:<22}{s['n']:>6}{s['errors']:>5}{s['truth_count']:>7}{s['pred_count']:>7}"
            f"{_pct(s['count_exact']):>7}{_pct(s['count_within']):>8}{_num(s['count_mae']):>7}"
            f"{_pct(s['area_median_rel_err']):>10}{_pct(s['area_mean_rel_err']):>10}"
            f"{_pct(s['presence']):>10}{_pct(s['iou_mean']):>6}{_pct(s['iou_pooled']):>8}")


def print_report(res: dict, per_tile: bool = False) -> None:
    """The tables on stdout."""
    print(f"buildings vs labels: {res['data']}  ({res['config']['within_rule']}; area = "
          "relative error on tiles with buildings; IoU = mean per tile / pooled pixels)")
    for det, groups in res["summary"].items():
        print(f"\n{DETECTORS.get(det, det)}")
        if per_tile:
            print(f"{'tile':<34}{'count':>6}{'pred':>6}{'area m2':>9}{'pred m2':>9}"
                  f"{'rel':>6}{'exists':>7}{'IoU':>6}  errors")
            for r in res["tiles"][det]:
                print(f"{r['tile']:<34}{r['truth_count']:>6}{_num(r['pred_count'], 0):>6}"
                      f"{r['truth_area_m2']:>9.0f}{_num(r['pred_area_m2'], 0):>9}"
                      f"{_pct(r['area_rel_err']):>6}{str(r['pred_exists']):>7}"
                      f"{_pct(r['iou']):>6}  {'; '.join(sorted(set(r['errors'].values())))[:80]}")
            print()
        print(HEAD)
        for g, s in groups.items():
            if s.get("n"):
                print(_line(g, s))
        rgb = groups.get(RGB_GROUP, {})
        if rgb.get("empty_tiles"):
            print(f"  {rgb['empty_tiles']} RGB tiles without buildings: mean predicted building "
                  f"area {_num(rgb['empty_pred_area_m2'], 0)} m2")
    if res.get("baselines"):
        print("\nbaselines that look at no pixel (all tiles of the run, RGB and pan)")
        print(HEAD)
        for name, groups in res["baselines"].items():
            for g in (RGB_GROUP, PAN_GROUP):
                if groups.get(g, {}).get("n"):
                    print(_line(f"{name}, {'RGB' if g == RGB_GROUP else 'pan'}", groups[g]))
    if res["goals"]:
        print(f"\ngoals on the RGB tiles (before this work: within {_pct(BEFORE['within'])}, "
              f"area median {_pct(BEFORE['area_median_rel_err'])}, presence "
              f"{_pct(BEFORE['presence'])}, on 29 similar tiles)")
        for det, checks in res["goals"].items():
            parts = [f"{k} {_pct(c['value'])} {c['op']} {_pct(c['goal'])} "
                     f"{'PASS' if c['pass'] else 'FAIL'}" for k, c in checks.items()]
            print(f"  {DETECTORS.get(det, det):<32}" + " | ".join(parts))
    if res.get("folds"):
        print("\nmodels: " + "; ".join(
            f"{k}: {v.get('path')}{' (cached)' if v.get('cached') else ''}"
            for k, v in res["folds"].items()))
    for note in res.get("notes", []):
        print(f"note: {note}")
    rq = res.get("rsvqa")
    if rq:
        print(f"\nRSVQA-HR mini, building questions: {rq['n_building']} of {rq['n_sampled']} "
              f"sampled (seed {rq['seed']}); accuracy per type")
        types = [t for t in ("presence", "comp", "count", "area", "average", "overall")
                 if any(t in a for a in rq["accuracy"].values())]
        print(f"{'':<28}" + "".join(f"{t:>10}" for t in types))
        for name, acc in rq["accuracy"].items():
            label = "question-only prior" if name == "prior" else \
                f"{name} ({', '.join(rq['detectors'].get(name, {})) or '?'})"
            print(f"{label:<28}" + "".join(f"{_pct(acc.get(t), 1):>10}" for t in types))
        if "spectral" in rq["accuracy"] and "auto" in rq["accuracy"]:
            auto, spec = rq["accuracy"]["auto"], rq["accuracy"]["spectral"]
            a, b = auto["overall"], spec["overall"]
            lower = [f"{t} {_pct(auto[t], 1)} < {_pct(spec[t], 1)}" for t in types
                     if t in auto and t in spec and auto[t] < spec[t]]
            print(f"  goal: auto building accuracy {_pct(a, 1)} >= spectral {_pct(b, 1)} "
                  f"{'PASS' if a >= b else 'FAIL'}"
                  + (f" (lower on: {', '.join(lower)})" if lower else ""))


def markdown_report(res: dict) -> str:
    """The overall, per-place and RSVQA tables in Markdown (for docs/buildings.md)."""
    cols = ("tiles", "errors", "count exact", "count ±20%/2", "count MAE", "area rel. err. "
            "(median)", "presence", "pixel IoU (pooled)")

    def cells(s: dict) -> list[str]:
        return [str(s["n"]), str(s["errors"]), _pct(s["count_exact"]), _pct(s["count_within"]),
                _num(s["count_mae"]), _pct(s["area_median_rel_err"]), _pct(s["presence"]),
                _pct(s["iou_pooled"])]

    out = ["| detector | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for det, groups in res["summary"].items():
        if groups.get(RGB_GROUP, {}).get("n"):
            out.append(f"| {DETECTORS.get(det, det)} | " + " | ".join(cells(groups[RGB_GROUP]))
                       + " |")
    for name, groups in res.get("baselines", {}).items():
        if groups.get(RGB_GROUP, {}).get("n"):
            out.append(f"| {name} (no pixels) | " + " | ".join(cells(groups[RGB_GROUP])) + " |")
    places = [g for g in next(iter(res["summary"].values()), {}) if g not in
              (RGB_GROUP, "all tiles")]
    if places:
        out += ["", "count ±20%/2 / area median rel. error / presence, per place:", "",
                "| detector | " + " | ".join(places) + " |", "|---|" + "---|" * len(places)]
        for det, groups in res["summary"].items():
            out.append(f"| {DETECTORS.get(det, det)} | " + " | ".join(
                f"{_pct(groups[g]['count_within'])} / {_pct(groups[g]['area_median_rel_err'])}"
                f" / {_pct(groups[g]['presence'])}" if groups.get(g, {}).get("n") else "-"
                for g in places) + " |")
    rq = res.get("rsvqa")
    if rq:
        types = [t for t in ("presence", "comp", "count", "area", "overall")
                 if any(t in a for a in rq["accuracy"].values())]
        out += ["", f"RSVQA-HR mini building questions ({rq['n_building']} of {rq['n_sampled']}"
                f" sampled, seed {rq['seed']}):", "",
                "| | " + " | ".join(types) + " |", "|---|" + "---|" * len(types)]
        for name, acc in rq["accuracy"].items():
            label = "question-only prior" if name == "prior" else \
                f"{name} ({', '.join(rq['detectors'].get(name, {})) or '?'})"
            out.append(f"| {label} | " + " | ".join(_pct(acc.get(t), 1) for t in types) + " |")
    return "\n".join(out) + "\n"

