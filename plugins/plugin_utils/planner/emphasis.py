"""Emphasis: rounds of the cost search in which one resource's ceilings weigh more than their true weights.

After the ROADEF/EURO 2012 winners (Gavranović, Buljubašić, Demirović), who alternate a search under the
original load-cost weights with one where a single resource weighs ten times more. A search under the true weights
stops where lowering one resource's overload means raising the others' for a while; under emphasis it makes those
trades, and the search that follows under the true weights takes back what they cost elsewhere. The rounds take
the end of the search time, and only when some of the load is above its bounds (not at them). Each round starts
from the best placement under the true weights so far and ends on it unless the round found a better one. The
resource is the one whose weighted load is furthest above its bound (``CostModel.load_above_bound``); round after
round it takes the next of the most costly half, as the winners do.
"""

from __future__ import annotations

# Weight multiplier of the emphasised resource (dimensionless): the winners' 10.
EMPHASIS_FACTOR = 10
# Share of the search time before the first round: the search under the true weights gains fastest at first, and
# emphasis trades off what is left once it slows down. At 300 s on ROADEF (seed 0, cost / best known, against 1.1461,
# 1.1434 without rounds): from half the time a2_2 1.0928 but a2_5 1.2210 (its first walk, cut to 150 s, ended 40 M
# above where a 270 s walk does); from 0.7 a2_5 1.1314 and a2_3 1.0509 (1.1256 without).
EMPHASIS_START = 0.7
# Share of the search time per round, and the share of a round under emphasis (then the true weights). At 300 s (a
# search of ~270 s) a round is ~22 s: 7 s under emphasis, 14 s under the true weights, near the trial that chose it:
# rounds of 8 s and 16 s for 120 s from the 300 s answers, against 120 s more of the search alone, took a2_2 from
# 839.3 M to 804.8 M (alone 838.6 M), a2_3 1362.8 M to 1293.7 M (1359.2 M), a2_5 364.0 M to 346.8 M (360.5 M).
EMPHASIS_ROUND = 0.08
EMPHASIS_SHARE = 1.0 / 3
# Rounds only when the load above its bounds is at least this share of the cost where the first walk hands over.
# At its bounds there is nothing to trade and the walk's own last 30 % is worth more: a1_1, a1_3 and a1_5 end
# within 1e-5 of their lower bounds, and a2_1's cost is all migrations. On ROADEF at 300 s, at the handover (63 % of
# the time): a1_4 0.108 (traced; its final answers 0.045-0.06), a2_5 about 0.19-0.23, a2_3 0.65, a2_2 0.98; a1_2
# and a2_4 end at 0.012 and 0.006. With the threshold at 0.15 (rounds on a2_2, a2_3 and a2_5 only), a2_4 ended at
# 1.0171 / 1.0099 / 1.0044 x the best known (seeds 0-2), with rounds at 1.0033 / 1.0035 / 1.0031. Its answers
# without them leave one resource's safety capacity unused on some machines while other machines are over it
# (17.4 M of r4 in the 1.0171 answer, 1 % of its cost), which a round weighing that resource trades back. a1_2
# stayed within its spread (1.0011 / 1.0118 / 1.0130 without, 1.0135 / 1.0194 / 1.0011 with); a1_4 went from
# 0.9931 / 0.9983 to 0.9927 / 0.9859 (seeds 0 / 1). Before swaps drew partners home (costsearch.HOME_SWAP_SHARE),
# rounds had cost a1_4: 1.0213 / 1.0528 against 1.0047, hence the 0.15 then.
EMPHASIS_MIN_GAP = 0.001
# Searches shorter than this (seconds) have no rounds: a round would last under 2.4 s, too short for the search to
# leave its placement and come back under the true weights (ROADEF A: 30,000-400,000 candidates a second here). The
# replay's 0.2 s plans and the default 10 s budget are unchanged.
EMPHASIS_MIN_S = 30.0


class Emphasis:
    """Which resource each round emphasises, and the best placement under the true weights kept aside."""

    def __init__(self, span_s):
        self.enabled = span_s >= EMPHASIS_MIN_S
        self.round_s = EMPHASIS_ROUND * span_s
        self.turn = 0
        self.best, self.best_asg = None, None
        self.resources, self.improved, self.gain = [], 0, 0.0

    def wanted(self, model):
        """True when the load above its bounds is at least EMPHASIS_MIN_GAP of the cost."""
        total = model.total()["total"]
        gap = sum(g for g, _r in model.load_above_bound() if g > 0)
        return total > 0 and gap >= EMPHASIS_MIN_GAP * total

    def next_resource(self, model):
        """The resource the next round emphasises (the next of the most costly half), or None when no resource's
        load is above its bound."""
        ranked = [r for gap, r in model.load_above_bound() if gap > 0]
        if not ranked:
            return None
        half = ranked[:len(ranked) // 2 + 1]
        r = half[self.turn % len(half)]
        self.turn += 1
        self.resources.append(r)
        return r

    def keep_or_restore(self, pk, model):
        """Keep the placement ``pk`` stands on aside when it is the best under the true weights (``model``'s) so far,
        else go back to the one kept aside. Returns True when the placement changed."""
        cost = model.total()["total"]
        if self.best is None or cost < self.best:
            if self.best is not None:
                self.improved += 1
                self.gain += self.best - cost
            self.best, self.best_asg = cost, list(pk.asg)
            return False
        asg = pk.asg
        for i, h in enumerate(self.best_asg):
            a = asg[i]
            if a != h:
                pk.move(i, h)
                model.moved(i, a, h)
        return True

    def stats(self):
        return {"rounds": len(self.resources), "resources": self.resources[:30], "improved": self.improved,
                "gain": round(self.gain, 3)}
