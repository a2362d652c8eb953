import pytest
import torch

from mt_repro import models
from mt_repro.core.errors import BadInput
from mt_repro.models.resnet import ShakeGate


def test_shakeshake26_has_the_papers_parameter_count():
    model = models.create_model("cifar_shakeshake26", num_classes=10)
    assert models.parameter_count(model) == 26_197_316


def test_resnext152_matches_the_original_parameter_count():
    # 62,000,400 is what the original architectures.resnext152(num_classes=1000) reports.
    model = models.create_model("resnext152", num_classes=1000)
    assert models.parameter_count(model) == 62_000_400
    names = [name for name, _ in model.named_children()]
    assert names == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
                     "avgpool", "fc1", "fc2"]
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 8, 36, 3]
    assert model.layer2[0].conv_a2.groups == 32


def test_shakeshake26_layout_and_state_dict_names():
    model = models.create_model("cifar_shakeshake26", num_classes=10)
    keys = list(model.state_dict())
    assert keys[0] == "conv1.weight"
    assert "layer2.0.downsample.conv.weight" in keys and "layer2.0.downsample.conv.bias" in keys
    assert keys[-4:] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert [model.layer1[0].conv_a1.out_channels, model.layer2[0].conv_a1.out_channels,
            model.layer3[0].conv_a1.out_channels] == [96, 192, 384]
    logits1, logits2 = model(torch.randn(2, 3, 32, 32))
    assert logits1.shape == logits2.shape == (2, 10)


def test_conv_init_is_he_normal_on_fan_out_and_bn_is_identity():
    torch.manual_seed(0)
    model = models.create_model("cifar_shakeshake26", num_classes=10)
    weight = model.layer3[1].conv_a2.weight
    expected_std = (2.0 / (3 * 3 * 384)) ** 0.5
    assert weight.std().item() == pytest.approx(expected_std, rel=0.02)
    assert torch.all(model.layer3[1].bn_a2.weight == 1) and torch.all(model.layer3[1].bn_a2.bias == 0)


def test_construction_is_reproducible_from_the_torch_seed():
    torch.manual_seed(7)
    a = models.create_model("cifar_shakeshake_mini", 10).state_dict()
    torch.manual_seed(7)
    b = models.create_model("cifar_shakeshake_mini", 10).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_shake_gate_forward_and_backward_draw_independent_gates():
    a = torch.randn(4, 3, 2, 2, requires_grad=True)
    b = torch.randn(4, 3, 2, 2, requires_grad=True)
    torch.manual_seed(1)
    out = ShakeGate.apply(a, b, True)
    out.sum().backward()
    torch.manual_seed(1)
    forward_gate = torch.empty(4, 1, 1, 1).uniform_(0, 1)
    backward_gate = torch.empty(4, 1, 1, 1).uniform_(0, 1)
    assert torch.allclose(out, a * forward_gate + b * (1 - forward_gate))
    assert torch.allclose(a.grad, backward_gate.expand_as(a))
    assert torch.allclose(b.grad, (1 - backward_gate).expand_as(b))
    assert not torch.allclose(forward_gate, backward_gate)


def test_shake_gate_is_one_half_in_eval():
    a, b = torch.randn(3, 2), torch.randn(3, 2)
    assert torch.allclose(ShakeGate.apply(a, b, False), 0.5 * a + 0.5 * b)


def test_eval_mode_is_deterministic_and_train_mode_is_not():
    model = models.create_model("cifar_shakeshake_mini", 10)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])
    model.train()
    assert not torch.equal(model(x)[0], model(x)[0])


def test_unknown_architecture_is_bad_input():
    with pytest.raises(BadInput, match="unknown architecture 'resnet18'") as error:
        models.create_model("resnet18", 10)
    assert f"known: {', '.join(models.list_models())}" in str(error.value)


def test_the_registry_lists_every_architecture_with_its_recipe():
    assert models.list_models() == ["cifar_shakeshake26", "cifar_shakeshake_mini", "convnet13", "digits_convnet",
                                    "resnext152", "resnext_mini", "wrn_28_2", "wrn_28_8", "wrn_var_37_2"]
    recipes = {name: models.get_model(name).recipe for name in models.list_models()}
    assert recipes.pop("convnet13") == "tensorflow" and set(recipes.values()) == {"pytorch"}
    convnet = models.get_model("convnet13")
    assert convnet.in_paper and convnet.init_from_data is not None   # weight normalisation, from data
    assert [name for name in models.list_models() if models.get_model(name).in_paper] == [
        "cifar_shakeshake26", "convnet13", "resnext152"]
    with pytest.raises(BadInput, match="unknown architecture 'resnet18'"):
        models.get_model("resnet18")


# --- every registered model: the registry drives these, a new model is tested without a new test ----
@pytest.mark.parametrize("name", models.list_models())
def test_every_model_builds_and_gives_two_heads_for_its_input(name):
    info = models.get_model(name)
    assert info.description and info.recipe in ("pytorch", "tensorflow") and len(info.input_size) == 3
    torch.manual_seed(0)
    big = name == "resnext152"   # 62M parameters: its shapes on the meta device, no arithmetic
    device = torch.device("meta") if big else torch.device("cpu")
    with device:
        model = models.create_model(name, num_classes=7)
        batch = torch.randn(4, *info.input_size)
    if info.init_from_data is not None:
        info.init_from_data(model, batch)
    model.train()
    first, second = model(batch)
    assert first.shape == second.shape == (4, 7)
    # a network registered with one head gives it twice (convnet13's second head is opt-in,
    # num_logits=2, so two heads do not always mean two tensors)
    assert info.heads in (1, 2) and (info.heads == 2 or second is first)
    assert models.parameter_count(model) > 0
    if not big:
        (first.sum() + second.sum()).backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_a_logit_distance_cost_on_a_one_head_network_is_refused():
    from mt_repro.config import TrainConfig
    from mt_repro.engine.recipes import check_config

    one_head = [name for name in models.list_models() if models.get_model(name).heads == 1]
    assert "wrn_28_2" in one_head
    config = TrainConfig(dataset="cifar10", arch="wrn_28_2", labeled_batch_size=31, logit_distance_cost=0.01).validate()
    with pytest.raises(BadInput, match="logit_distance_cost 0.01 needs two heads.*wrn_28_2 has one classifier"):
        check_config(config)
    check_config(TrainConfig(dataset="cifar10", arch="wrn_28_2", labeled_batch_size=31).validate())   # -1: no such cost, runs
