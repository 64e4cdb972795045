"""The design warning: for the chosen design, the four questions a cold-start experiment must answer.

1. Do treatment and control new items take traffic from each other?
2. How do new and old items compete?
3. Does isolating items and users shrink the content pool?
4. What happens to the rest of the platform when new items get a guaranteed quota? A quota is a fixed total
   (items x target), so a user-side cost measured while part of the new items or traffic is treated changes at
   100%: the answer gives the factor for the design, with this readout's measured new-item impression shares.
"""

from __future__ import annotations

QUESTIONS = {
    "interference": "Do treatment and control new items take traffic from each other?",
    "new_vs_old": "How do new and old items compete?",
    "pool": "Does isolating items and users shrink the content pool?",
    "quota": "What happens to the rest of the platform when new items get a guaranteed quota?",
}

_ANSWERS = {
    "user_split": {
        "interference": (
            "Through shared items, yes: there are no treatment or control new items. Every new item is shown to "
            "both groups, so the new-item pool is shared by both groups and exposure an item earns in treatment "
            "feeds raises its counters and its exposure in control feeds too. Item- and author-side metrics mix "
            "both groups' traffic and understate the effect of boosting everyone; read them from an author split."
        ),
        "new_vs_old": (
            "Inside each treatment user's feed: every slot a new item takes is an old item not shown. The viewer "
            "is the unit, so the consumer metrics (CTR, dwell and impressions per DAU) measure that cost per user."
        ),
        "pool": "No: both groups see the whole catalog; the price is the shared items above.",
        "quota": (
            "The quota's total is fixed by the new items, not by the traffic. If only treatment traffic serves it, "
            "treatment users ({share:.0%} of traffic) carry it all: {inverse:.1f}x their share at 100%, so the "
            "per-user cost here overstates rollout's; if it is a share of each feed, the cost per user holds but "
            "new items get {inverse:.1f}x the exposure at 100%. New-item share of impressions here: "
            "control {control:.2%}, treatment {treatment:.2%}."
        ),
    },
    "author_split": {
        "interference": (
            "Yes, competition for exposure: treatment authors' new items take feed slots from control authors' "
            "items in the same feeds, so control is not an untouched baseline and the lift overstates what a "
            "boost for all authors would give. Consumer metrics here are per author bucket (impressions of the "
            "author's items), not per viewer."
        ),
        "new_vs_old": (
            "Treatment new items displace old items (and control new items) in every user's feed; no bucket of "
            "users is spared, so the user-side cost is not measured by any comparison here: read it from a user "
            "split or against the pre-period."
        ),
        "pool": "No: every user sees both groups' items; the catalog is whole.",
        "quota": (
            "Only treatment authors' new items ({share:.0%} of authors) claim the quota; at 100% all new items do, "
            "so the impressions taken from old items grow about {inverse:.1f}x and a platform cost measured now "
            "grows with them. New-item share of the impressions credited to each group: control {control:.2%}, "
            "treatment {treatment:.2%}."
        ),
    },
    "balanced_author_split": {
        "interference": (
            "Not by design: each group's new items get a fixed share of traffic, so treatment authors cannot take "
            "control's exposure. Check the realised new-item shares below against the design's."
        ),
        "new_vs_old": (
            "The fixed new-item share decides how many old items each feed gives up; within it, the policy only "
            "changes which new items are shown. The user-side cost is that of the share, not of the policy."
        ),
        "pool": (
            "Only if the design also splits users so that a group's users see only its group's new items: then "
            "each pool is a fraction of the catalog's new items, and a small pool understates what ranking over "
            "all of them would give. With authors split and users shared, the pool is whole."
        ),
        "quota": (
            "The quota inside each group's share is fixed per group, so the cost at 100% is the treatment group's "
            "per-user cost if the share stays; raising the share for everyone scales it. New-item share of "
            "impressions: control {control:.2%}, treatment {treatment:.2%} (treatment share {share:.0%}, "
            "{inverse:.1f}x at 100%)."
        ),
    },
}


def design_warning(design: str, treatment_share: float, new_item_share: dict[str, float]) -> list[dict[str, str]]:
    """The four questions with this design's answers, filled with the measured new-item impression shares.

    A design without written answers gets that said in each answer, so the report never hides the questions.
    """
    answers = _ANSWERS.get(design)
    values = {
        "share": treatment_share,
        "inverse": 1 / treatment_share,
        "control": new_item_share.get("control", float("nan")),
        "treatment": new_item_share.get("treatment", float("nan")),
    }
    return [
        {
            "key": key,
            "question": question,
            "answer": answers[key].format(**values)
            if answers
            else f"Design {design!r} has no written answer: answer this by hand before trusting the readout.",
        }
        for key, question in QUESTIONS.items()
    ]


def warning_text(questions: list[dict[str, str]]) -> str:
    """The questions and answers as one paragraph (CLI, MLflow)."""
    return " ".join(f"{q['question']} {q['answer']}" for q in questions)
