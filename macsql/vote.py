"""The execution vote: candidates are grouped by their result, and the biggest group answers.

A small model is more often right when several of its queries agree on the result than when one greedy
query is trusted. Grouping uses the one comparator's notion of equal results (`compare.result_key`, BIRD
semantics: the same set of rows), so the vote agrees with how answers are scored. Only candidates that ran
vote; an error is not a result. Ranking: group size, then the candidate score (rows with values beat an
empty or NULL-only result), then the earliest member (the direct query comes first, so a tie goes to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from macsql.compare import result_key


@dataclass(frozen=True)
class Group:
    members: tuple[int, ...]  # candidate positions, in order
    score: int
    n_rows: int

    @property
    def votes(self) -> int:
        return len(self.members)


@dataclass(frozen=True)
class Vote:
    winner: int  # position of the chosen candidate
    groups: list[Group] = field(default_factory=list)  # best first
    group_of: dict[int, int] = field(default_factory=dict)  # candidate position -> group number (0 = best)
    total: int = 0  # candidates tried, those that failed included

    @property
    def settled(self) -> bool:
        """The best group returns values and holds more than half of all candidates that were tried."""
        if not self.groups:
            return False
        best = self.groups[0]
        return best.score == 2 and 2 * best.votes > self.total


def vote(candidates: list[dict]) -> Vote:
    """Pick a candidate: each is a dict with `result` (ExecResult or None) and `score` (0, 1 or 2)."""
    if not candidates:
        raise ValueError("no candidates to vote on")
    by_key: dict = {}
    for i, cand in enumerate(candidates):
        res = cand.get("result")
        if res is None or not res.ok:
            continue
        by_key.setdefault(result_key(res.rows), []).append(i)
    groups = [Group(tuple(m), candidates[m[0]]["score"], len(candidates[m[0]]["result"].rows))
              for m in by_key.values()]
    groups.sort(key=lambda g: (-g.votes, -g.score, g.members[0]))
    group_of = {i: gi for gi, g in enumerate(groups) for i in g.members}
    if groups:
        winner = groups[0].members[0]
    else:  # nothing ran: the best-scoring, earliest candidate (its error is what the user sees)
        winner = max(range(len(candidates)), key=lambda i: (candidates[i]["score"], -i))
    return Vote(winner, groups, group_of, total=len(candidates))
