"""The recommendation from the aggregate's intervals: a clear winner, overlap, disagreement."""

from __future__ import annotations

from gradcam_cli.metrics.recommend import recommend


def cell(mean, low, high, n=10):
    return {"mean": mean, "low": low, "high": high, "n": n}


BETTER = {"pointing": "higher", "deletion": "lower"}
BASE = {"random": {"pointing": cell(0.2, 0.1, 0.3), "deletion": cell(0.5, 0.4, 0.6)},
        "centre": {"pointing": cell(0.4, 0.3, 0.5), "deletion": cell(0.45, 0.4, 0.5)}}


def test_clear_winner_named_with_baselines():
    agg = {"gradcam@a": {"pointing": cell(0.9, 0.8, 1.0), "deletion": cell(0.3, 0.25, 0.35)},
           "gradcam@b": {"pointing": cell(0.5, 0.4, 0.6), "deletion": cell(0.32, 0.26, 0.38)}, **BASE}
    found = recommend(agg, BETTER, ["gradcam@a", "gradcam@b"], ["random", "centre"])
    assert (found["winner"], found["method"], found["layer"], found["verdict"]) == ("gradcam@a", "gradcam", "a", "clear")
    assert found["fields"]["pointing"] == {"leader": "gradcam@a", "clear": True, "mean": 0.9, "random": 0.2,
                                           "centre": 0.4}
    assert found["fields"]["deletion"]["clear"] is False  # 0.25-0.35 overlaps 0.26-0.38
    assert found["line"] == "recommended: gradcam@a (clearly best on pointing gradcam@a 0.900, random 0.200, centre 0.400)"


def test_overlap_and_disagreement_give_no_clear_winner():
    same = {"x": {"pointing": cell(0.6, 0.4, 0.8)}, "y": {"pointing": cell(0.6, 0.4, 0.8)}, **BASE}
    found = recommend(same, BETTER, ["x", "y"], ["random", "centre"])
    assert found["winner"] is None and found["verdict"] == "no clear winner"
    assert found["line"].startswith("no clear winner") and "random 0.200, centre 0.400" in found["line"]
    # x clearly best on pointing, y clearly best on deletion: the metrics disagree
    split = {"x": {"pointing": cell(0.9, 0.85, 0.95), "deletion": cell(0.5, 0.45, 0.55)},
             "y": {"pointing": cell(0.3, 0.2, 0.4), "deletion": cell(0.2, 0.15, 0.25)}, **BASE}
    assert recommend(split, BETTER, ["x", "y"], ["random", "centre"])["winner"] is None


def test_a_single_candidate_is_named_as_such():
    found = recommend({"x": {"pointing": cell(0.6, 0.4, 0.8)}, **BASE}, BETTER, ["x"], ["random", "centre"])
    assert (found["winner"], found["verdict"], found["layer"]) == ("x", "only candidate", None)
