"""ERM maths: Eq. 2, 3 and 4 against values computed by hand, and Algorithm 1's augment vectors and shapes."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from elmd_sdk.retrievers.ssc import SelfSeparation, augment_vectors, set_vector
from elmd_sdk.trainers.losses.ert import candidate_mask, ert_loss
from elmd_sdk.trainers.losses.joint import joint_loss
from elmd_sdk.trainers.losses.ssc_contrast import ssc_pair_losses

R2 = math.sqrt(2.0)


def ssc_loss(h: torch.Tensor, h_prime: torch.Tensor, tau: float = 0.5) -> torch.Tensor:
    """Eq. 3 written out for P given pairs of sets (P, s, d) -> (P,): the reference ssc_pair_losses must match."""
    logits = torch.einsum("pjd,pkd->pjk", F.normalize(h, dim=-1), F.normalize(h_prime, dim=-1)) / tau  # (P, s, s)
    return (torch.logsumexp(logits, dim=-1) - torch.diagonal(logits, dim1=-2, dim2=-1)).sum(-1)  # (P,)


def test_candidate_mask_is_positive_plus_other_emotions() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1])
    positive = torch.tensor([1, 0, 0, 4, 3])
    mask = candidate_mask(labels, positive)
    expected = [
        [0, 1, 0, 1, 1],  # anchor 0: positive 1, negatives 3 and 4; item 2 (same emotion) left out
        [1, 0, 0, 1, 1],
        [1, 0, 0, 1, 1],
        [1, 1, 1, 0, 1],
        [1, 1, 1, 1, 0],
    ]
    assert mask.tolist() == [[bool(x) for x in row] for row in expected]


def test_candidate_mask_rejects_bad_positive() -> None:
    with pytest.raises(ValueError, match="same emotion"):
        candidate_mask(torch.tensor([0, 1]), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="same emotion"):
        candidate_mask(torch.tensor([0, 0]), torch.tensor([0, 1]))


def test_ert_loss_eq2_by_hand() -> None:
    # e0 = (1,0), e1 = (0,1), e2 = (-1,0), e3 = (2,2) (cosine ignores scale); tau = 0.5 doubles cosines.
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [2.0, 2.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    positive = torch.tensor([1, 0, 3, 2])
    loss = ert_loss(emb, positive, candidate_mask(labels, positive), tau=0.5)
    # anchor 0: pos cos 0 -> 0; negs cos(e0,e2) = -1 -> -2, cos(e0,e3) = 1/sqrt2 -> sqrt2
    l0 = -0.0 + math.log(math.exp(0) + math.exp(-2) + math.exp(R2))
    # anchor 1: pos cos(e1,e0) = 0; negs cos(e1,e2) = 0, cos(e1,e3) = 1/sqrt2
    l1 = -0.0 + math.log(1 + 1 + math.exp(R2))
    # anchor 2: pos cos(e2,e3) = -1/sqrt2 -> -sqrt2; negs cos(e2,e0) = -1 -> -2, cos(e2,e1) = 0
    l2 = R2 + math.log(math.exp(-R2) + math.exp(-2) + 1)
    # anchor 3: pos cos(e3,e2) -> -sqrt2; negs cos(e3,e0) = cos(e3,e1) = 1/sqrt2 -> sqrt2
    l3 = R2 + math.log(math.exp(-R2) + 2 * math.exp(R2))
    torch.testing.assert_close(loss, torch.tensor([l0, l1, l2, l3], dtype=torch.float64))


def test_ert_loss_with_only_a_positive_is_zero() -> None:
    emb = torch.randn(2, 5)
    positive = torch.tensor([1, 0])
    loss = ert_loss(emb, positive, candidate_mask(torch.tensor([3, 3]), positive))
    torch.testing.assert_close(loss, torch.zeros(2))


def test_ssc_loss_eq3_by_hand_and_direction() -> None:
    h = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)  # (1, s=2, d=2)
    h_prime = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)
    # basic h: j=1 pos cos 1 -> 2, neg cos(h1, h'2) = 1/sqrt2 -> sqrt2; j=2 pos 1/sqrt2 -> sqrt2, neg cos 0 -> 0
    forward = math.log(1 + math.exp(R2 - 2)) + math.log(1 + math.exp(-R2))
    # basic h': j=1 pos cos 1 -> 2, neg cos(h'1, h2) = 0; j=2 pos and neg both 1/sqrt2
    backward = math.log(1 + math.exp(-2)) + math.log(2)
    torch.testing.assert_close(ssc_loss(h, h_prime, tau=0.5), torch.tensor([forward], dtype=torch.float64))
    torch.testing.assert_close(ssc_loss(h_prime, h, tau=0.5), torch.tensor([backward], dtype=torch.float64))
    pairs = ssc_pair_losses(torch.cat([h, h_prime]), tau=0.5)  # (2, 2)
    assert pairs.shape == (2, 2)
    torch.testing.assert_close(pairs[0, 1], torch.tensor(forward, dtype=torch.float64))
    torch.testing.assert_close(pairs[1, 0], torch.tensor(backward, dtype=torch.float64))


def test_ssc_pair_losses_match_pairwise_calls() -> None:
    sets = torch.randn(5, 3, 7, dtype=torch.float64)
    pairs = ssc_pair_losses(sets, tau=0.3)
    for a in range(5):
        for b in range(5):
            expected = ssc_loss(sets[a : a + 1], sets[b : b + 1], tau=0.3)[0]
            torch.testing.assert_close(pairs[a, b], expected)


def test_joint_loss_eq4_by_hand() -> None:
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    positive = torch.tensor([1, 0, 3, 2, 5, 4])
    candidates = candidate_mask(labels, positive)
    ert = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64)
    a = torch.arange(6, dtype=torch.float64)
    pairs = 10 * a[:, None] + a[None, :]  # L_c[a, b] = 10a + b, so the two-direction mean is 5.5 (a + b)
    # groups (anchor + candidates): 0,1 -> {0,1,4,5}; 2,3 -> {2,3,4,5}; 4,5 -> {0..5}
    # sum over unordered pairs of 5.5 (a + b) = 5.5 (m - 1) * sum(group) for a group of m items
    g01 = 5.5 * 3 * (0 + 1 + 4 + 5)  # 165, n_e = 3 -> n_s = 6
    g23 = 5.5 * 3 * (2 + 3 + 4 + 5)  # 231, n_s = 6
    g45 = 5.5 * 5 * 15  # 412.5, n_e = 5 -> n_s = 15
    s, lam = 2, 0.5
    ssc_terms = [g01 / (s * 6), g01 / (s * 6), g23 / (s * 6), g23 / (s * 6), g45 / (s * 15), g45 / (s * 15)]
    expected = sum(lam * e + c for e, c in zip(ert.tolist(), ssc_terms, strict=True)) / 6
    got = joint_loss(ert, pairs, candidates, s=s, lambda_=lam)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    # ablations: w/o SSC keeps lambda * L_e, w/o ERT keeps the SSC term
    torch.testing.assert_close(joint_loss(ert, None, candidates, s=s, lambda_=lam), lam * ert.mean())
    torch.testing.assert_close(
        joint_loss(None, pairs, candidates, s=s, lambda_=lam),
        torch.tensor(sum(ssc_terms) / 6, dtype=torch.float64),
    )
    with pytest.raises(ValueError):
        joint_loss(None, None, candidates, s=s)


def test_augment_vectors_algorithm1() -> None:
    c = augment_vectors(8, 4)  # g = 2
    assert c.tolist() == [
        [1, 1, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 1, 1],
    ]
    c = augment_vectors(10, 4)  # g = int(10 / 4) = 2: the last two entries stay zero
    assert c.sum(0).tolist() == [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    with pytest.raises(ValueError):
        augment_vectors(3, 4)


def test_self_separation_shapes_and_mlp_input() -> None:
    d, s = 8, 4
    module = SelfSeparation(d, s)
    seen: list[torch.Tensor] = []
    module.mlp[0].register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    e_u = torch.randn(3, d)
    out = module(e_u)
    assert out.shape == (3, s, d)
    x = seen[0]  # (3, s, 2d) = [e_u + c_i ; c_i]
    assert x.shape == (3, s, 2 * d)
    c = augment_vectors(d, s)
    for i in range(s):
        torch.testing.assert_close(x[:, i, :d], e_u + c[i])
        torch.testing.assert_close(x[:, i, d:], c[i].expand(3, d))
    assert "augment" not in module.state_dict()  # rebuilt from (d, s), not stored


def test_set_vector_inner_product_is_mean_position_cosine() -> None:
    a = torch.randn(1, 4, 6, dtype=torch.float64)
    b = torch.randn(1, 4, 6, dtype=torch.float64)
    va, vb = set_vector(a), set_vector(b)
    assert va.shape == (1, 24)
    torch.testing.assert_close(va.norm(dim=1), torch.ones(1, dtype=torch.float64))
    mean_cos = torch.nn.functional.cosine_similarity(a[0], b[0], dim=-1).mean()
    torch.testing.assert_close((va @ vb.T)[0, 0], mean_cos)
