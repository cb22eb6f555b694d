"""Group presets of a pool (pure): per class "normal vs adversarial", single pairs, and the groups of
"compare with normal images of its predicted class". Twins are found through each item's
``source`` (the normal image an adversarial one was made from), never through id spelling."""

from __future__ import annotations

from aevis_core.pool import Pool, PoolItem


def twins(pool: Pool) -> dict[str, str]:
    """Normal item id -> id of its adversarial twin."""
    return {it.source: it.id for it in pool.items if it.kind == "adversarial"}


def presets(pool: Pool) -> dict[str, dict[str, list[str]]]:
    """Named group presets: per class with ≥ 2 images "normal vs adversarial"; else the image and its twin."""
    out: dict[str, dict[str, list[str]]] = {}
    names = pool.class_names
    adv_of = twins(pool)
    by_class: dict[int, list[PoolItem]] = {}
    for it in pool.items:
        if it.kind == "normal" and it.label is not None and it.id in adv_of:
            by_class.setdefault(it.label, []).append(it)
    for lab, items in sorted(by_class.items(), key=lambda kv: names[kv[0]]):
        ids = [it.id for it in items]
        if len(items) >= 2:
            out[f"{names[lab]}: normal vs adversarial"] = {
                f"{names[lab]}: normal": ids, f"{names[lab]}: adversarial": [adv_of[i] for i in ids]}
        else:
            out[f"{names[lab]} and its adversarial twin"] = {
                f"{names[lab]}: normal": ids, f"{names[lab]}: adversarial": [adv_of[ids[0]]]}
    return out


def compare_with_predicted(pool: Pool, adv_id: str) -> dict[str, list[str]] | None:
    """Groups {adversarial image, normal images of its predicted class} (None if there are none)."""
    idx = pool.index()
    if adv_id not in idx:
        return None
    it = pool.items[idx[adv_id]]
    if it.kind != "adversarial":
        return None
    others = [o.id for o in pool.items if o.kind == "normal" and o.label == it.pred]
    if not others:
        return None
    name = pool.class_names[it.pred]
    return {f"{it.source} (adv., predicted {name})": [adv_id], f"normal {name}": others}


def is_adversarial(pool: Pool, item_id: str) -> bool:
    """Whether ``item_id`` is an adversarial twin of the pool."""
    idx = pool.index().get(item_id)
    return idx is not None and pool.items[idx].kind == "adversarial"
