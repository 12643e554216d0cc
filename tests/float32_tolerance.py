"""Tolerances for comparing float32 results of two formulations, derived from float32 rounding.

Two formulations of the same quantity (a padded and a compact loss, graph mode and PyNative, a float64
reference and the float32 kernels) add the same terms in different orders, and MindSpore's CPU kernels
split their sums across threads, so even one formulation may add in another order on another machine.
Reordering a sum of n float32 terms moves it by about u * sqrt(n) relative to the size of the terms
(rounding errors of random sign, u = 2**-24 the unit roundoff), and each term carries a few roundings of
its own (an exp, a log, a division: a handful of u). The helpers below return that estimate times a
safety factor, so a test fails on a real difference (a wrong gain, a missing entry, a layer skipped:
per cent and more) and not on the last bits of a reordered sum.
"""
from __future__ import annotations

import math

FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24
SAFETY = 8.0                    # the sqrt(n) estimate is typical, not a bound: room for an unlucky order
ROUNDINGS_PER_TERM = 8          # exp / log / sigmoid / division inside each summed term


def reordered_sum_rtol(num_terms: int, *, roundings_per_term: int = ROUNDINGS_PER_TERM) -> float:
    """Relative tolerance of a float32 sum (or mean) of ``num_terms`` terms added in another order."""
    return SAFETY * FLOAT32_UNIT_ROUNDOFF * (roundings_per_term + math.sqrt(num_terms))


def network_rtol(max_terms_per_layer: int, num_layers: int) -> float:
    """Relative tolerance (to the output's scale) of a network run by two formulations.

    Each layer's sums of at most ``max_terms_per_layer`` products are reordered independently; the
    errors of ``num_layers`` successive layers add like a random walk (BatchNorm keeps activations of
    order one, so relative errors neither shrink nor grow much from layer to layer).
    """
    return SAFETY * FLOAT32_UNIT_ROUNDOFF * math.sqrt(max_terms_per_layer) * math.sqrt(num_layers)
