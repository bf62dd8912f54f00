"""Losses against hand-computed values; weighting/summing, NaN masks, −1 labels, pairs, finite gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from monai.losses import FocalLoss as MonaiFocal

from cadx.errors import CadxConfigError, CadxDataError
from cadx.objectives import LOSSES, Objective, build_objective, term
from cadx.objectives.classification import inverse_frequency_weights
from cadx.objectives.ranking import margin_ranking_pairs

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)
NAMES = ["attribute_mse", "aux_ce", "ce", "contrastive", "dice", "focal", "margin_ranking", "seg_ce", "weighted_ce"]


def one(name: str, **kw: object) -> torch.nn.Module:
    """The single loss module of a one-part objective."""
    return build_objective({name: {"weight": 1.0, **kw}}).losses[name]


def logits2() -> torch.Tensor:
    """Rows: p = (1/2, 1/2), (3/4, 1/4), (1/2, 1/2)."""
    return torch.tensor([[0.0, 0.0], [LN3, 0.0], [0.0, 0.0]], requires_grad=True)


def test_registry_names() -> None:
    assert set(NAMES) <= set(LOSSES.names())  # other modules (e.g. scnet) may add their own


# -- classification ---------------------------------------------------------------------------------------------
def test_ce_hand_values_and_missing_labels() -> None:
    # row 0: −ln ½ = ln 2; row 1 (label 1, p = ¼): ln 4; row 2 label −1 is ignored → (ln 2 + ln 4)/2 = 1.5 ln 2
    out, batch = {"logits": logits2()}, {"label": torch.tensor([0, 1, -1])}
    v = one("ce")(out, batch)
    assert v.item() == pytest.approx(1.5 * LN2, abs=1e-6)
    v.backward()
    assert torch.all(out["logits"].grad[2] == 0) and torch.isfinite(out["logits"].grad).all()
    # label smoothing ε = 0.1 on p = (¾, ¼), label 0: 0.9·ln(4/3) + 0.1·(ln(4/3) + ln 4)/2
    ls = one("ce", label_smoothing=0.1)({"logits": logits2()[1:2]}, {"label": torch.tensor([0])})
    assert ls.item() == pytest.approx(0.9 * math.log(4 / 3) + 0.05 * (math.log(4 / 3) + LN4), abs=1e-6)
    # all labels missing → 0 with a (zero) gradient, not NaN
    z = one("ce")({"logits": logits2()}, {"label": torch.tensor([-1, -1, -1])})
    assert z.item() == 0.0 and z.requires_grad
    with pytest.raises(CadxDataError):
        one("ce")({"logits": logits2()}, {"label": torch.tensor([0, 2, 1])})


def test_weighted_ce_inverse_frequency() -> None:
    assert inverse_frequency_weights([3, 1, 0]).tolist() == pytest.approx([4 / 9, 4 / 3, 0.0])
    out, batch = {"logits": logits2()[:2]}, {"label": torch.tensor([0, 1])}
    # counts (3, 1): w = (4/6, 4/2) = (⅔, 2); (⅔ ln 2 + 2 ln 4) / (⅔ + 2) = 1.75 ln 2
    expected = 1.75 * LN2
    assert build_objective({"weighted_ce": 1}, class_counts=[3, 1])(out, batch)[0].item() == pytest.approx(expected)
    assert build_objective("weighted_ce", priors=[0.75, 0.25])(out, batch)[0].item() == pytest.approx(expected)
    assert one("weighted_ce", class_weights=[1, 3])(out, batch).item() == pytest.approx(expected)  # scale cancels
    assert one("weighted_ce", class_counts=[1, 1])(out, batch).item() == pytest.approx(1.5 * LN2)
    with pytest.raises(CadxConfigError, match="class weights"):
        build_objective("weighted_ce")


def test_focal_hand_values_and_monai() -> None:
    out, batch = {"logits": logits2()}, {"label": torch.tensor([1, 0, -1])}
    # γ = 2: row 0 p_t = ½ → ¼·ln 2; row 1 p_t = ¾ → (1/16)·ln(4/3); mean of the two labelled rows
    f0, f1 = 0.25 * LN2, math.log(4 / 3) / 16
    assert one("focal", gamma=2)(out, batch).item() == pytest.approx((f0 + f1) / 2, abs=1e-7)
    assert one("focal", gamma=2, alpha=[0.25, 0.75])(out, batch).item() == pytest.approx(
        (0.75 * f0 + 0.25 * f1) / 2, abs=1e-7)
    assert one("focal", gamma=0)(out, batch).item() == pytest.approx(one("ce")(out, batch).item(), abs=1e-7)
    # MONAI's softmax focal averages over B·K one-hot entries → ours = K × MONAI on the labelled rows
    torch.manual_seed(0)
    x, y = torch.randn(6, 3), torch.tensor([0, 2, 1, 1, 0, 2])
    monai = MonaiFocal(use_softmax=True, to_onehot_y=True, gamma=1.5, alpha=[0.2, 0.3, 0.5])(x, y[:, None])
    ours = one("focal", gamma=1.5, alpha=[0.2, 0.3, 0.5])({"logits": x}, {"label": y})
    assert ours.item() == pytest.approx(3 * monai.item(), rel=1e-5)
    bal = build_objective({"focal": {"alpha": "balanced", "gamma": 0}}, class_counts=[3, 1])
    assert bal({"logits": logits2()[:2]}, {"label": torch.tensor([0, 1])})[0].item() == pytest.approx(
        (2 / 3 * LN2 + 2 * LN4) / 2)  # α not normalised: plain mean of α_y·CE


def test_aux_ce_train_and_eval() -> None:
    aux = [torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]])]
    out = {"logits": torch.zeros(1, 2), "aux_logits": aux}
    v = one("aux_ce")(out, {"label": torch.tensor([0])})
    assert v.item() == pytest.approx(0.3 * (LN2 + math.log(4 / 3)), abs=1e-6)  # 0.3 per head
    assert one("aux_ce")({"logits": torch.zeros(1, 2)}, {"label": torch.tensor([0])}).item() == 0.0  # eval mode


# -- pairwise ---------------------------------------------------------------------------------------------------
def test_contrastive_hand_values_two_stages() -> None:
    # pair 0 same class: stage 1 D = 5 → ½·25 = 12.5, stage 2 D = 0 → 0
    # pair 1 different:  stage 1 D = 0.6 → ½·(1 − 0.6)² = 0.08, stage 2 D = 2 ≥ m → 0
    # pair 2 has a missing label → left out; mean over pairs of the stage sums = (12.5 + 0.08)/2 = 6.29
    a = {"embeddings": [torch.tensor([[0.0, 0.0], [0.0, 0.0], [9.0, 9.0]]), torch.tensor([[1.0], [0.0], [5.0]])]}
    b = {"embeddings": [torch.tensor([[3.0, 4.0], [0.6, 0.0], [0.0, 0.0]]), torch.tensor([[1.0], [2.0], [0.0]])]}
    ba, bb = {"label": torch.tensor([0, 0, -1])}, {"label": torch.tensor([0, 1, 1])}
    loss = one("contrastive")
    assert loss.pairwise
    assert loss(a, ba, b, bb).item() == pytest.approx(6.29, abs=1e-6)
    # the same pairs as the two halves of one batch (no second branch)
    cat = {"embeddings": [torch.cat([x, y]) for x, y in zip(a["embeddings"], b["embeddings"], strict=True)]}
    assert loss(cat, {"label": torch.cat([ba["label"], bb["label"]])}).item() == pytest.approx(6.29, abs=1e-6)
    # margin option: m = 2 → pair 1 stage 1: ½·1.4² = 0.98, stage 2 D = 2 → 0
    assert one("contrastive", margin=2.0)(a, ba, b, bb).item() == pytest.approx((12.5 + 0.98) / 2, abs=1e-6)


def test_contrastive_identical_dissimilar_pair_has_finite_gradient() -> None:
    x = torch.ones(2, 3, requires_grad=True)
    v = one("contrastive")({"features": x[:1]}, {"label": torch.tensor([0])}, {"features": x[1:]},
                           {"label": torch.tensor([1])})
    v.backward()
    assert v.item() == pytest.approx(0.5) and torch.isfinite(x.grad).all()


def test_margin_ranking_hand_values() -> None:
    # p = softmax(logits)[:, 1]: (0, ln3) → ¾, (0, 0) → ½, (ln3, 0) → ¼
    la = torch.tensor([[0, LN3], [0, 0], [LN3, 0], [0, 0], [0, 0]])
    lb = torch.tensor([[0, 0], [0, LN3], [0, 0], [0, 0], [0, 0]])
    ta = torch.tensor([0.9, 0.8, 0.5, 0.1, float("nan")])
    tb = torch.tensor([0.2, 0.3, 0.5, 0.6, 0.4])
    # pair 0: t↓ p↓ agree by .25 ≥ γ → 0; pair 1: t_a > t_b but p_a − p_b = −.25 → .1 + .25 = .35;
    # pair 2: tie → 0 (counted); pair 3: t_a < t_b, p equal → .1; pair 4: NaN target → left out
    la.requires_grad_(True)
    v = one("margin_ranking")({"logits": la}, {"score": ta}, {"logits": lb}, {"score": tb})
    assert v.item() == pytest.approx((0 + 0.35 + 0 + 0.1) / 4, abs=1e-6)
    v.backward()
    assert torch.isfinite(la.grad).all() and la.grad[1, 1] < 0  # pushes p_a of the mis-ranked pair up
    # equals torch's MarginRankingLoss on the non-tied pairs
    p_i, p_j = torch.tensor([0.75, 0.5, 0.5]), torch.tensor([0.5, 0.75, 0.5])
    t_i, t_j = torch.tensor([0.9, 0.8, 0.1]), torch.tensor([0.2, 0.3, 0.6])
    ref = F.margin_ranking_loss(p_i, p_j, torch.sign(t_i - t_j), margin=0.1, reduction="none")
    assert torch.allclose(margin_ranking_pairs(p_i, p_j, t_i, t_j, 0.1), ref)
    # a ready score output and one-logit (sigmoid) models
    sv = one("margin_ranking", score_key="p")({"p": torch.tensor([0.2])}, {"score": torch.tensor([1.0])},
                                              {"p": torch.tensor([0.4])}, {"score": torch.tensor([0.0])})
    assert sv.item() == pytest.approx(0.3)
    s1 = one("margin_ranking")({"logits": torch.zeros(1, 1)}, {"score": torch.tensor([0.0])},
                               {"logits": torch.zeros(1, 1)}, {"score": torch.tensor([1.0])})
    assert s1.item() == pytest.approx(0.1)


# -- regression and segmentation -------------------------------------------------------------------------------
def test_attribute_mse_nan_mask() -> None:
    pred = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.0, 0.0]], requires_grad=True)
    nan = float("nan")
    target = torch.tensor([[1.0, nan], [0.0, 0.0], [nan, nan]])
    # attribute 0: rows 0, 1 → (.25 + 1)/2 = .625; attribute 1: row 1 → 0; Eq. 2 sums over attributes
    v = one("attribute_mse")({"attributes": pred}, {"attributes": target})
    assert v.item() == pytest.approx(0.625)
    v.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[2].abs().sum() == 0
    assert one("attribute_mse", reduction="mean")({"attributes": pred}, {"attributes": target}).item() == \
        pytest.approx(1.25 / 3)
    assert one("attribute_mse", attribute_weights=[2, 1])({"attributes": pred}, {"attributes": target}).item() \
        == pytest.approx(1.25)
    assert one("attribute_mse")({"attributes": pred}, {"attributes": torch.full((3, 2), nan)}).item() == 0.0


def test_dice_binary_and_multiclass_hand_values() -> None:
    s = 1e-5
    # binary: p = ½ everywhere, g = (1, 1, 0, 0): 1 − (2·1 + s)/(2 + 2 + s)
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    mask = torch.tensor([[[[1, 1], [0, 0]]]])
    v = one("dice")({"seg_logits": logits}, {"mask": mask})
    assert v.item() == pytest.approx(1 - (2 + s) / (4 + s), abs=1e-6)
    v.backward()
    assert torch.isfinite(logits.grad).all()
    assert one("dice", target_map={2: 1})({"seg_logits": logits}, {"mask": mask * 2}).item() == \
        pytest.approx(v.item())
    # 2 classes, 2 pixels: p = (½, ½), (¼, ¾); g = class 0, class 1
    ml = torch.tensor([[[[0.0, 0.0]], [[0.0, LN3]]]])
    mm = torch.tensor([[[[0, 1]]]])
    d0 = (2 * 0.5 + s) / (0.75 + 1 + s)  # class 0: I = ½, Σp = ¾, Σg = 1
    d1 = (2 * 0.75 + s) / (1.25 + 1 + s)  # class 1: I = ¾, Σp = 1¼, Σg = 1
    assert one("dice")({"seg_logits": ml}, {"mask": mm}).item() == pytest.approx(1 - (d0 + d1) / 2, abs=1e-6)
    assert one("dice", include_background=False)({"seg_logits": ml}, {"mask": mm}).item() == pytest.approx(
        1 - d1, abs=1e-6)


def test_seg_ce_hand_values() -> None:
    ml = torch.tensor([[[[0.0, 0.0, 5.0]], [[0.0, LN3, 0.0]]]])
    mm = torch.tensor([[[[0, 1, -1]]]])  # third pixel unknown
    assert one("seg_ce")({"seg_logits": ml}, {"mask": mm}).item() == pytest.approx(
        (LN2 + math.log(4 / 3)) / 2, abs=1e-6)
    assert one("seg_ce")({"seg_logits": torch.zeros(1, 1, 2, 2)}, {"mask": torch.tensor([[[[1, 0], [2, 0]]]])}
                         ).item() == pytest.approx(LN2, abs=1e-6)
    with pytest.raises(CadxDataError):
        one("seg_ce")({"seg_logits": ml}, {"mask": torch.tensor([[[[0, 2, 1]]]])})


# -- objective --------------------------------------------------------------------------------------------------
def test_objective_weighting_and_parts() -> None:
    out, batch = {"logits": logits2()}, {"label": torch.tensor([1, 0, -1])}
    obj = build_objective({"ce": 1.0, "focal": {"weight": 0.5, "gamma": 2}})
    assert isinstance(obj, Objective) and obj.names == ["ce", "focal"] and not obj.pairwise
    total, parts = obj(out, batch)
    assert set(parts) == {"ce", "focal"}
    assert parts["ce"].item() == pytest.approx(one("ce")(out, batch).item())  # parts are unweighted
    assert total.item() == pytest.approx(parts["ce"].item() + 0.5 * parts["focal"].item())
    assert build_objective(["ce", "focal"]).weights == {"ce": 1.0, "focal": 1.0}
    assert build_objective(obj) is obj


def test_objective_errors() -> None:
    with pytest.raises(CadxConfigError, match="unknown loss"):
        build_objective({"cee": 1})
    with pytest.raises(CadxConfigError, match="bad option"):
        build_objective({"ce": {"gama": 2}})
    with pytest.raises(CadxConfigError, match="weight_decay"):
        build_objective({"ce": 1, "weight_decay": 1e-3})
    with pytest.raises(CadxConfigError):
        build_objective({})
    with pytest.raises(CadxDataError, match="label"):
        build_objective("ce")({"logits": logits2()}, {})


def test_mtmr_total_on_siamese_pair() -> None:
    # Eq. 5: L = L_cls + λ·L_reg + β·L_rank with λ = 1, β = 0.5; per-sample parts use both branches
    out_a = {"logits": torch.tensor([[0.0, LN3]], requires_grad=True), "attributes": torch.tensor([[0.5, 0.0]])}
    out_b = {"logits": torch.tensor([[0.0, 0.0]], requires_grad=True), "attributes": torch.tensor([[1.0, 1.0]])}
    ba = {"label": torch.tensor([1]), "attributes": torch.tensor([[1.0, 0.0]]), "score": torch.tensor([0.3])}
    bb = {"label": torch.tensor([0]), "attributes": torch.tensor([[1.0, float("nan")]]), "score": torch.tensor([0.8])}
    obj = build_objective({"ce": 1, "attribute_mse": 1, "margin_ranking": 0.5})
    assert obj.pairwise
    total, parts = obj(out_a, ba, out_b, bb)
    assert parts["ce"].item() == pytest.approx((math.log(4 / 3) + LN2) / 2, abs=1e-6)  # both images
    assert parts["attribute_mse"].item() == pytest.approx((0.25 + 0) / 2 + 0.0)  # attr 1 only seen in row a
    assert parts["margin_ranking"].item() == pytest.approx(0.1 + 0.25)  # t_a < t_b but p_a = ¾ > p_b = ½
    assert total.item() == pytest.approx(parts["ce"].item() + parts["attribute_mse"].item() + 0.5 * 0.35)
    total.backward()
    assert torch.isfinite(out_a["logits"].grad).all() and torch.isfinite(out_b["logits"].grad).all()


def test_multitask_terms_same_loss_twice() -> None:
    # SCNet-style: binary Dice on a {0,1,2} mask merged by target_map, ternary CE, classification CE
    seg_t = torch.zeros(1, 3, 2, 2, requires_grad=True)
    seg_b = torch.zeros(1, 1, 2, 2, requires_grad=True)
    out = {"seg_bin": seg_b, "seg_tern": seg_t, "logits": torch.zeros(1, 2, requires_grad=True)}
    batch = {"mask": torch.tensor([[[[0, 1], [2, 2]]]]), "label": torch.tensor([1])}
    obj = build_objective({"bin": term("dice", out_key="seg_bin", target_map={2: 1}),
                           "tern": term("seg_ce", out_key="seg_tern"), "cls": term("ce", weight=2.0)})
    total, parts = obj(out, batch)
    s = 1e-5
    assert parts["bin"].item() == pytest.approx(1 - (2 * 1.5 + s) / (2 + 3 + s), abs=1e-6)  # p = ½, g = (0,1,1,1)
    assert parts["tern"].item() == pytest.approx(LN3, abs=1e-6)
    assert total.item() == pytest.approx(parts["bin"].item() + LN3 + 2 * LN2, abs=1e-6)
    total.backward()
    assert all(torch.isfinite(t.grad).all() for t in (seg_t, seg_b, out["logits"]))
