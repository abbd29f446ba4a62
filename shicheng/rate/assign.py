"""Who rates what: a balanced, seeded assignment with hidden repeats, and the logins that reach it.

    assign(store, "pilot", k=3, seed=0, repeat_share=0.1)
    issue_logins(store, "pilot", base_url="https://rate.example.org")   # one-time links

Each item goes to k raters of its master's lineage. Items are dealt in a seeded order, masters with the
fewest eligible raters first (their raters have the least freedom), each to the k eligible raters with the
lightest load so far; then single items move from heavier to lighter eligible raters until no two raters
who could swap an item differ by two or more.

About `repeat_share` of each rater's items come back a second time, later in their queue and at least a
third of the queue after the first showing, so that the rater is unlikely to recognise them; the pair
measures the rater's self-consistency. The rater sees no mark of a repeat.
"""

from __future__ import annotations

import random
import secrets
from collections import defaultdict

from sqlalchemy import delete, func, select

from shicheng.rate.auth import hash_password, issue_link
from shicheng.rate.db import Account, Assignment, Item, Rating, Store, audit, study_by_name
from shicheng.rate.study import COORDINATOR


def plan_assignment(items: list[tuple[int, str]], raters: dict[int, list[str]], k: int, seed: int
                    ) -> dict[int, list[int]]:
    """{rater id: item ids} giving every (item id, master) to k raters whose lineage holds its master."""
    if k < 1:
        raise ValueError(f"k (raters per item) must be at least 1, got {k}")
    eligible: dict[str, list[int]] = defaultdict(list)
    for rid in sorted(raters):
        for m in raters[rid]:
            eligible[m].append(rid)
    short = {m: len(eligible.get(m, [])) for _, m in items if len(eligible.get(m, [])) < k}
    if short:
        raise ValueError("not enough raters of the lineage for k=" + str(k) + ": " +
                         ", ".join(f"master '{m}' has {n}" for m, n in sorted(short.items())))
    rng = random.Random(seed)
    tiebreak = {rid: rng.random() for rid in sorted(raters)}
    order = list(items)
    rng.shuffle(order)
    order.sort(key=lambda it: len(eligible[it[1]]))  # stable: the shuffle survives within a master
    load: dict[int, int] = dict.fromkeys(raters, 0)
    holders: dict[int, list[int]] = {}
    for item_id, master in order:
        holders[item_id] = sorted(eligible[master], key=lambda r: (load[r], tiebreak[r]))[:k]
        for r in holders[item_id]:
            load[r] += 1
    # The greedy pass can leave a rater who spans two masters over- or under-loaded; move single items from
    # a heavier to a lighter eligible rater until no move narrows a gap of two or more. Each move lowers the
    # sum of squared loads, so this ends.
    moved = True
    while moved:
        moved = False
        for item_id, master in order:
            for heavy in sorted(holders[item_id], key=lambda r: (-load[r], tiebreak[r])):
                light = [r for r in eligible[master] if r not in holders[item_id] and load[r] < load[heavy] - 1]
                if light:
                    to = min(light, key=lambda r: (load[r], tiebreak[r]))
                    holders[item_id] = [to if r == heavy else r for r in holders[item_id]]
                    load[heavy] -= 1
                    load[to] += 1
                    moved = True
                    break
    out: dict[int, list[int]] = {rid: [] for rid in raters}
    for item_id, _ in order:
        for r in holders[item_id]:
            out[r].append(item_id)
    return out


def queue_with_repeats(item_ids: list[int], repeat_share: float, rng: random.Random) -> list[tuple[int, bool]]:
    """A rater's queue: the items shuffled, and some of them again later as hidden repeats."""
    if not 0 <= repeat_share < 1:
        raise ValueError(f"repeat_share must be in [0, 1), got {repeat_share}")
    queue = [(i, False) for i in item_ids]
    rng.shuffle(queue)
    n_repeat = round(repeat_share * len(queue))
    if repeat_share > 0 and len(queue) >= 4:
        n_repeat = max(1, n_repeat)
    gap = max(1, len(queue) // 3)
    # Repeat items from the first part of the queue, so that each has room to come back a gap later.
    candidates = [i for i, _ in queue[: max(1, len(queue) - gap)]]
    for item_id in rng.sample(candidates, min(n_repeat, len(candidates))):
        first = queue.index((item_id, False))
        lo = min(first + gap + 1, len(queue))
        queue.insert(rng.randint(lo, len(queue)), (item_id, True))
    return queue


def assign(store: Store, study: str, *, k: int, seed: int = 0, repeat_share: float = 0.1,
           replace: bool = False, actor: str = COORDINATOR) -> dict:
    """Write the assignment of `study`; `replace` discards an earlier one, but only while nothing is rated."""
    with store.session() as s:
        st = study_by_name(s, study)
        existing = s.scalar(select(func.count()).select_from(Assignment).where(Assignment.study_id == st.id))
        if existing:
            rated = s.scalar(select(func.count()).select_from(Rating).join(
                Assignment, Rating.assignment_id == Assignment.id).where(Assignment.study_id == st.id))
            if not replace:
                raise ValueError(f"study '{study}' is already assigned ({existing} assignments); pass replace")
            if rated:
                raise ValueError(f"study '{study}' already has {rated} ratings; its assignment can no longer change")
            s.execute(delete(Assignment).where(Assignment.study_id == st.id))
        items = [(i.id, i.master) for i in s.scalars(select(Item).where(Item.study_id == st.id).order_by(Item.id))]
        raters = {a.id: list(a.lineage) for a in s.scalars(
            select(Account).where(Account.study_id == st.id, Account.role == "rater"))}
        if not raters:
            raise ValueError(f"study '{study}' has no raters yet")
        plan = plan_assignment(items, raters, k, seed)
        rng = random.Random(seed + 1)
        per_rater = {}
        for rid in sorted(plan):
            queue = queue_with_repeats(plan[rid], repeat_share, rng)
            s.add_all(Assignment(study_id=st.id, rater_id=rid, item_id=item_id, position=n, repeat=rep)
                      for n, (item_id, rep) in enumerate(queue, start=1))
            per_rater[rid] = (len(plan[rid]), sum(rep for _, rep in queue))
        logins = {a.id: a.login for a in s.scalars(select(Account).where(Account.id.in_(list(plan))))}
        summary = {"study": study, "k": k, "seed": seed, "items": len(items),
                   "raters": {logins[r]: {"items": n, "repeats": rep} for r, (n, rep) in per_rater.items()}}
        audit(s, actor, "assign", study, k=k, seed=seed, repeat_share=repeat_share, raters=summary["raters"])
    return summary


def issue_logins(store: Store, study: str, *, base_url: str = "http://127.0.0.1:8400", passwords: bool = False,
                 actor: str = COORDINATOR) -> list[dict]:
    """Per rater a one-time login link, or with `passwords` a new random password (shown once, stored hashed)."""
    secret = store.secret()
    out = []
    with store.session() as s:
        st = study_by_name(s, study)
        for acc in s.scalars(select(Account).where(Account.study_id == st.id, Account.role == "rater")
                             .order_by(Account.login)):
            if passwords:
                pw = secrets.token_urlsafe(9)
                acc.password_hash = hash_password(pw)
                audit(s, actor, "issue_password", acc.login)
                out.append({"login": acc.login, "password": pw, "url": base_url.rstrip("/") + "/login"})
            else:
                token = issue_link(s, secret, acc, actor)
                out.append({"login": acc.login, "url": f"{base_url.rstrip('/')}/link/{token}"})
    return out


__all__ = ["assign", "issue_logins", "plan_assignment", "queue_with_repeats"]
