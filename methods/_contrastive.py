"""Loss helpers shared by FCL, Local CL and the global/local contrastive method (GCL).

All three use the same per-pair InfoNCE term, in which the denominator holds
the positive itself and an explicit set of negatives (not the whole batch):

    l(q, k+, N) = -log( exp(q.k+/tau) / (exp(q.k+/tau) + sum_{n in N} exp(q.n/tau)) )

FCL, Wu et al. MICCAI 2021, Eq. 1 (averaged over the positive set P(q));
Chaitanya et al. NeurIPS 2020, Eq. 1 (averaged over all positive pairs, Eq. 2).
The helpers take similarity logits (already divided by tau) and boolean masks
that say which entries are positives and which are negatives for each query,
so that each method only has to build its masks.
"""

from __future__ import annotations

import torch


def pair_terms(
    pos_logits: torch.Tensor,
    pos_mask: torch.Tensor,
    neg_logits: torch.Tensor,
    neg_mask: torch.Tensor,
) -> torch.Tensor:
    """``-log(e^{s+} / (e^{s+} + sum_n e^{s_n}))`` for every (query, positive) pair.

    pos_logits (N, P) and neg_logits (N, M) are similarities over tau; pos_mask
    (N, P) and neg_mask (N, M) pick each query's positives and negatives.
    Returns (N, P), zero where ``pos_mask`` is false. A query without negatives
    gets zero for each of its positives (the fraction is 1).
    """
    masked_neg = neg_logits.masked_fill(~neg_mask, float("-inf"))
    neg_lse = torch.logsumexp(masked_neg, dim=1, keepdim=True)  # log sum_n e^{s_n}, -inf if none
    # -log(e^a / (e^a + e^b)) = logaddexp(a, b) - a, stable for any a, b.
    terms = torch.logaddexp(pos_logits, neg_lse.expand_as(pos_logits)) - pos_logits
    return torch.where(pos_mask, terms, torch.zeros_like(terms))


def positive_set_loss(
    pos_logits: torch.Tensor,
    pos_mask: torch.Tensor,
    neg_logits: torch.Tensor,
    neg_mask: torch.Tensor,
) -> torch.Tensor:
    """Per-query ``l(q, P, N) = -1/|P| sum_{k+ in P} l(q, k+, N)`` (FCL, Wu et al. 2021, Eq. 1).

    Returns (N,); a query whose positive set is empty contributes 0.
    """
    terms = pair_terms(pos_logits, pos_mask, neg_logits, neg_mask)
    count = pos_mask.sum(dim=1)
    return terms.sum(dim=1) / count.clamp_min(1)


def pair_mean_loss(
    pos_logits: torch.Tensor,
    pos_mask: torch.Tensor,
    neg_logits: torch.Tensor,
    neg_mask: torch.Tensor,
) -> torch.Tensor:
    """Mean of ``l(q, k+, N)`` over all positive pairs (Chaitanya et al. 2020, Eq. 2)."""
    terms = pair_terms(pos_logits, pos_mask, neg_logits, neg_mask)
    return terms.sum() / pos_mask.sum().clamp_min(1)
