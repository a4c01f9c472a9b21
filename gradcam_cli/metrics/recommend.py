"""Which method (and layer) to trust: a recommendation from the aggregate's 95% intervals.

For each tabled field measured, the *leader* is the candidate (a method, or ``method@layer``
in a layer sweep; never a baseline) with the best mean. It *clearly leads* when its 95%
bootstrap interval does not overlap any other candidate's (for a higher-is-better field: its
low end above every other's high end). A candidate is *clearly beaten* on a field when another
candidate's interval lies wholly on the better side of its own. The recommendation names the
one candidate that clearly leads on at least one field and is clearly beaten on none; if there
is no such candidate, or more than one (the metrics disagree), there is no clear winner. With a
single candidate it is named as such. Every verdict carries the random and centre baselines'
means on the same fields.
"""

from __future__ import annotations

import math
from typing import Sequence

NO_CLEAR_WINNER = "no clear winner"


def _ok(cell: dict | None) -> bool:
    return bool(cell) and cell.get("n", 0) > 0 and all(math.isfinite(cell[k]) for k in ("mean", "low", "high"))


def _above(a: dict, b: dict, way: str) -> bool:
    """``a``'s interval lies wholly on the better side of ``b``'s."""
    return a["low"] > b["high"] if way == "higher" else a["high"] < b["low"]


def split_column(column: str) -> tuple[str, str | None]:
    """``method@layer`` -> (method, layer); a plain method -> (method, None)."""
    method, _, layer = column.partition("@")
    return method, layer or None


def recommend(aggregate: dict, better: dict, candidates: Sequence[str], baselines: Sequence[str]) -> dict:
    """The recommendation (see the module docstring) as evaluation.json's ``recommendation``:
    ``winner`` (a column or None), ``method`` / ``layer`` (None without a winner, or without a
    sweep), ``verdict`` (``clear``, ``only candidate`` or ``no clear winner``), ``fields``: per
    field measured, ``leader``, ``clear``, its ``mean``, and each baseline's mean; ``line``: the
    sentence printed."""
    fields = [f for f in better if any(_ok(aggregate.get(c, {}).get(f)) for c in candidates)]
    table, leads, beaten = {}, set(), set()
    for f in fields:
        way, cells = better[f], {c: aggregate[c][f] for c in candidates if _ok(aggregate.get(c, {}).get(f))}
        sign = 1.0 if way == "higher" else -1.0
        leader = max(cells, key=lambda c: sign * cells[c]["mean"])
        clear = all(_above(cells[leader], cells[c], way) for c in cells if c != leader)
        if clear and len(cells) > 1:
            leads.add(leader)
        beaten.update(c for c in cells if any(_above(cells[o], cells[c], way) for o in cells if o != c))
        table[f] = {"leader": leader, "clear": bool(clear and len(cells) > 1), "mean": cells[leader]["mean"],
                    **{b: aggregate.get(b, {}).get(f, {}).get("mean") for b in baselines}}
    if len(candidates) == 1 and fields:
        winner, verdict = candidates[0], "only candidate"
    else:
        standing = sorted(leads - beaten, key=list(candidates).index)
        winner, verdict = (standing[0], "clear") if len(standing) == 1 else (None, NO_CLEAR_WINNER)
    method, layer = split_column(winner) if winner else (None, None)
    out = {"winner": winner, "method": method, "layer": layer, "verdict": verdict, "fields": table}
    out["line"] = recommendation_line(out, baselines)
    return out


def recommendation_line(found: dict, baselines: Sequence[str]) -> str:
    """``recommended: gradcam@conv3 (clearly best on pointing 0.950; random 0.200, centre 0.450)``, or
    ``no clear winner (...)`` with each field's leader, always with the baselines' means."""
    def fmt(v):
        return "-" if v is None or not math.isfinite(v) else f"{v:.3f}"

    def cells(items):
        return "; ".join(f"{f} {c['leader']} {fmt(c['mean'])}, "
                         + ", ".join(f"{b} {fmt(c.get(b))}" for b in baselines) for f, c in items)

    table = found["fields"]
    if not table:
        return "recommendation: none (no metric was measured)"
    if found["verdict"] == "clear":
        shown = [(f, c) for f, c in table.items() if c["leader"] == found["winner"] and c["clear"]]
        return f"recommended: {found['winner']} (clearly best on {cells(shown)})"
    if found["verdict"] == "only candidate":
        return f"recommended: {found['winner']} (the only method and layer scored: {cells(table.items())})"
    return f"{NO_CLEAR_WINNER}: the 95% intervals overlap or the metrics disagree (leaders: {cells(table.items())})"
