"""Model behaviour on tiny inputs: the properties MODELS.md's checklist asks for."""

import pytest
import torch

from pipelines.models import RANKERS
from pipelines.models.base import InputSpec
from pipelines.models.esmm import ESMM, ESMMConfig
from pipelines.models.layers import MLP
from pipelines.models.melu import MeLU, MeLUConfig, evidence_candidates
from pipelines.models.mtl import PLE, MMoE, MMoEConfig, PLEConfig
from pipelines.models.poso import PosoGate
from pipelines.models.uie import StreamingCentroids, UIEConfig

SPEC = InputSpec(
    cardinalities=(50, 40, 5, 7), n_dense=3, pc_dim=2, user_fields=(0, 2), item_field=1, n_users=50, seq_len=4
)


def batch(n: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    click = (torch.rand(n, generator=g) < 0.3).float()
    return {
        "sparse": torch.stack([torch.randint(0, c + 1, (n,), generator=g) for c in SPEC.cardinalities], dim=1),
        "dense": torch.randn(n, SPEC.n_dense, generator=g),
        "pc": torch.rand(n, SPEC.pc_dim, generator=g),
        "seq": torch.randint(0, 41, (n, SPEC.seq_len), generator=g),
        "user": torch.randint(0, 51, (n,), generator=g),
        "user_type": torch.randint(0, 2, (n,), generator=g),
        "click": click,
        "conversion": click * (torch.rand(n, generator=g) < 0.4).float(),
    }


CONFIGS = {
    "base": {},
    "shared_bottom": {"bottom": [16]},
    "esmm": {},
    "mmoe": {"n_experts": 3, "expert": [16]},
    "ple": {"levels": 2, "expert": [16]},
}


@pytest.mark.parametrize("name", sorted(RANKERS))
@pytest.mark.parametrize("poso", [False, True])
def test_forward_and_backward(name: str, poso: bool) -> None:
    cls = RANKERS[name]
    model = cls(SPEC, cls.config_class(**CONFIGS[name], tower=[8], poso=poso))
    b = batch()
    out = model(b)
    assert out["p_ctr"].shape == (64,) and torch.all((out["p_ctcvr"] >= 0) & (out["p_ctcvr"] <= 1))
    loss, logs = model.loss(b, out)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad), name


def test_esmm_ctcvr_is_the_product_and_loss_is_finite_at_extremes() -> None:
    model = ESMM(SPEC, ESMMConfig(tower=[8]))
    out = model(batch())
    assert torch.equal(out["p_ctcvr"], out["p_ctr"] * out["p_cvr"])
    with torch.no_grad():
        model.ctr_tower.out.bias.fill_(60.0)
        model.cvr_tower.out.bias.fill_(-60.0)
    b = batch()
    loss, _ = model.loss(b, model(b))
    assert torch.isfinite(loss)


def test_esmm_both_losses_reach_the_shared_embedding() -> None:
    model = ESMM(SPEC, ESMMConfig(tower=[8], ctr_weight=1.0, ctcvr_weight=0.0))
    b = batch()
    model.loss(b, model(b))[0].backward()
    ctr_only = model.encoder.embedding.tables[0].weight.grad.clone()
    model.zero_grad()
    twin = ESMM(SPEC, ESMMConfig(tower=[8], ctr_weight=0.0, ctcvr_weight=1.0))
    twin.load_state_dict(model.state_dict())
    twin.loss(b, twin(b))[0].backward()
    assert ctr_only.abs().sum() > 0 and twin.encoder.embedding.tables[0].weight.grad.abs().sum() > 0


def test_poso_gate_has_the_right_shape_and_depends_on_the_code_only() -> None:
    gate = PosoGate(pc_dim=2, out_dim=8)
    pc = torch.rand(5, 2)
    assert torch.allclose(gate(pc), torch.ones(5, 8))  # C·σ(0) = 1 at init
    with torch.no_grad():
        gate.net[2].weight.normal_()
    g1, g2 = gate(pc), gate(pc + 1.0)
    assert g1.shape == (5, 8) and not torch.allclose(g1, g2)
    mlp = MLP(4, [8], pc_dim=2)
    x = torch.randn(5, 4)
    plain = MLP(4, [8])
    plain.linears.load_state_dict(mlp.linears.state_dict())
    assert torch.allclose(mlp(x, pc), plain(x))  # gate ≡ 1 at init equals the plain layer


def test_poso_mmoe_reweights_experts_per_sample() -> None:
    model = MMoE(SPEC, MMoEConfig(n_experts=3, expert=[16], tower=[8], poso=True))
    b = batch()
    base = model(b)["p_ctr"]
    with torch.no_grad():
        model.poso.net[2].weight.normal_()
    b2 = dict(b, pc=b["pc"] * 0 + 5.0)
    assert not torch.allclose(model(b)["p_ctr"], model(b2)["p_ctr"])
    assert model.poso(b["pc"]).shape == (64, 3)  # one scalar per expert
    assert base.shape == (64,)


def test_ple_last_level_has_no_shared_gate_and_gates_sum_to_one() -> None:
    model = PLE(SPEC, PLEConfig(levels=3, expert=[16], tower=[8]))
    assert model.levels[-1].shared_gate is None and all(lv.shared_gate is not None for lv in model.levels[:-1])
    x = torch.randn(4, model.input_dim)
    weights = torch.softmax(model.levels[0].task_gates["ctr"].linear(x), dim=-1)
    assert torch.allclose(weights.sum(dim=1), torch.ones(4))


def test_ple_task_gate_never_sees_other_tasks_experts() -> None:
    model = PLE(SPEC, PLEConfig(levels=1, expert=[16], tower=[8]))
    b = batch()
    out = model(b)
    out["ctr_logit"].sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.levels[0].specific["cvr"].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.levels[0].specific["ctr"].parameters())


def test_ple_with_one_level_and_no_specific_experts_equals_mmoe() -> None:
    torch.manual_seed(0)
    ple = PLE(SPEC, PLEConfig(levels=1, specific_experts=0, shared_experts=3, expert=[16], tower=[8]))
    mmoe = MMoE(SPEC, MMoEConfig(n_experts=3, expert=[16], tower=[8]))
    mmoe.encoder.load_state_dict(ple.encoder.state_dict())
    mmoe.experts.load_state_dict(ple.levels[0].shared.state_dict())
    for t in ("ctr", "cvr"):
        mmoe.gates[t].load_state_dict(ple.levels[0].task_gates[t].state_dict())
    mmoe.towers.load_state_dict(ple.towers.state_dict())
    b = batch()
    assert torch.allclose(ple(b)["p_ctr"], mmoe(b)["p_ctr"]) and torch.allclose(ple(b)["p_cvr"], mmoe(b)["p_cvr"])


def test_centroid_update_moves_only_the_assigned_centroid_by_rho() -> None:
    memory = StreamingCentroids(4, 2, rate=0.1)
    memory.centroids.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]))
    before = memory.centroids.clone()
    v = torch.tensor([[1.0, 1.0]])
    memory.update(v)
    assert torch.allclose(memory.centroids[0], before[0] + 0.1 * (v[0] - before[0]))
    assert torch.equal(memory.centroids[1:], before[1:])
    assert torch.equal(memory.retrieve(torch.tensor([[-1.0, -1.0]]), 2), torch.zeros(1, 2))


def train_uie(reseed_every: int) -> tuple[PLE, torch.Tensor]:
    torch.manual_seed(0)
    uie_cfg = UIEConfig(dim=8, user_centroids=8, item_centroids=8, reseed_every=reseed_every)
    model = PLE(SPEC, PLEConfig(levels=2, expert=[16], tower=[8], uie=uie_cfg))
    uie = model.uie
    uie.user_memory.warm_start(uie._user_vector(batch(256, seed=9)).detach(), torch.Generator().manual_seed(0))
    start = uie.user_memory.centroids.clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(30):
        b = batch(seed=step)
        loss, _ = model.loss(b, model(b))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, start


def test_uie_centroids_move_stay_diverse_and_ignore_the_main_loss() -> None:
    model, start = train_uie(reseed_every=20)
    assert not torch.allclose(model.uie.user_memory.centroids, start)
    diverse = model.uie.user_memory.usage_entropy()
    collapsed = train_uie(reseed_every=0)[0].uie.user_memory.usage_entropy()
    assert diverse > 0.6 and collapsed < diverse, (diverse, collapsed)
    assert all("centroids" not in name for name, _ in model.named_parameters())


def test_ucbe_memory_unchanged_without_clicks() -> None:
    model = PLE(SPEC, PLEConfig(expert=[16], tower=[8], uie=UIEConfig(dim=8)))
    b = batch()
    b["click"] = torch.zeros_like(b["click"])
    before = model.uie.user_state.clone()
    model(b)
    assert torch.equal(before, model.uie.user_state)


def test_uie_aux_loss_leaves_shared_embeddings_alone() -> None:
    model = PLE(SPEC, PLEConfig(expert=[16], tower=[8], uie=UIEConfig(dim=8)))
    aux, _ = model.uie.loss(batch())
    aux.backward()
    assert all(t.weight.grad is None for t in model.encoder.embedding.tables)


def test_ucse_per_centroid_equals_attention_over_the_clustered_history() -> None:
    """UCSE as MODELS.md writes it: replace each history item by its nearest item centroid, attend with the
    candidate. The model computes it per centroid; both must agree, empty histories (all padding) included."""
    import math

    model = PLE(SPEC, PLEConfig(expert=[16], tower=[8], uie=UIEConfig(dim=8, item_centroids=6)))
    uie = model.uie
    uie.item_memory.warm_start(uie.embedding.tables[SPEC.item_field].weight.detach(), torch.Generator().manual_seed(1))
    b = batch(32, seed=3)
    b["seq"][:4] = 0  # no history
    item = uie._item_embedding(b["sparse"][:, SPEC.item_field])
    history = uie._item_embedding(b["seq"])  # [B, L, e]
    nearest = torch.cdist(history.reshape(-1, history.shape[-1]), uie.item_memory.centroids).argmin(dim=1)
    clustered = uie.item_memory.centroids[nearest].reshape(history.shape)
    scores = torch.einsum("ble,be->bl", clustered, item) / math.sqrt(history.shape[-1])
    weights = torch.softmax(scores.masked_fill(b["seq"] == 0, float("-inf")), dim=1).nan_to_num(0.0)
    expected = torch.einsum("bl,ble->be", weights, clustered)
    got = uie._sequence(b["seq"], item)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.equal(got[:4], torch.zeros_like(got[:4]))
    assert not torch.allclose(got[4:], torch.zeros_like(got[4:]))


def melu_task(n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "sparse": torch.randint(0, 6, (n, 3), generator=g),
        "multi_hot": [(torch.rand(n, 4, generator=g) < 0.4).float()],
        "rating": torch.randint(1, 6, (n,), generator=g).float(),
    }


def test_melu_local_update_changes_only_decision_layers() -> None:
    model = MeLU([5, 5, 5], [4], MeLUConfig(embed_dim=4, hidden=[8, 8], local_lr=0.1))
    embeddings = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("decision")}
    decision = {k: v.clone() for k, v in model.decision.state_dict().items()}
    fast = model.adapt(melu_task(6, 0))
    assert any(not torch.equal(fast[k], decision[k]) for k in decision)
    for k, v in model.state_dict().items():
        if not k.startswith("decision"):
            assert torch.equal(v, embeddings[k])
    assert all(torch.equal(model.decision.state_dict()[k], decision[k]) for k in decision)  # θ restored


def test_melu_local_step_is_theta_minus_alpha_grad() -> None:
    model = MeLU([5, 5, 5], [4], MeLUConfig(embed_dim=4, hidden=[8], local_lr=0.05, local_steps=1))
    support = melu_task(2, 1)
    loss = torch.nn.functional.mse_loss(model(support), support["rating"])
    grads = torch.autograd.grad(loss, list(model.decision.parameters()))
    fast = model.adapt(support)
    for (name, p), g in zip(model.decision.named_parameters(), grads, strict=True):
        assert torch.allclose(fast[name], p - 0.05 * g, atol=1e-6)


def test_melu_second_order_differs_from_first_order() -> None:
    torch.manual_seed(0)
    grads = {}
    for first in (False, True):
        model = MeLU(
            [5, 5, 5], [4], MeLUConfig(embed_dim=4, hidden=[8], local_lr=0.5, local_steps=2, first_order=first)
        )
        torch.manual_seed(1)
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.3)
        model.meta_loss([(melu_task(5, 2), melu_task(4, 3))]).backward()
        grads[first] = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert not torch.allclose(grads[False], grads[True])


def test_evidence_scores_lie_in_unit_interval() -> None:
    model = MeLU([5, 5, 5], [4], MeLUConfig(embed_dim=4, hidden=[8]))
    supports = [(melu_task(4, s), torch.tensor([1, 2, 3, s % 3 + 1])) for s in range(5)]
    ranked = evidence_candidates(model, supports, k=3)
    assert len(ranked) == 3 and all(0 <= score <= 1 for _, score in ranked)
    assert ranked[0][1] == max(score for _, score in ranked)
