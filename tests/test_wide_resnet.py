"""WRN-28-2, WRN-28-8 and wrn_var_37_2 against USB's own modules (``semilearn/nets/wrn/wrn.py``
and ``wrn_var.py``).

``tests/golden/usb_models.json`` holds what USB's ``WideResNet`` and ``WideResNetVar`` report,
recorded outside this repository at the commit it names: parameter counts and state-dict layout
for 10 and 100 classes, and for WRN-28-2 (``seeded``) and wrn_var_37_2 (``seeded_more``) built
after a torch seed their initial weights (sums per entry) and their logits on a seeded batch in
train mode and then in eval mode. Equal layout, equal initial weights and equal logits mean
the same modules, built in the same order, computing the same function (including which batch
norms see which tensor).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mt_repro import models
from mt_repro.models import wide_resnet

GOLDEN = json.loads((Path(__file__).parent / "golden" / "usb_models.json").read_text())
# every seeded entry; the first one's batch shape is the one the golden's "about" gives it
SEEDED = [{"input_shape": [4, 3, 32, 32], **GOLDEN["seeded"]}, *GOLDEN["seeded_more"]]
SEEDED_IDS = [entry["model"] for entry in SEEDED]


def keys_sha(model: nn.Module) -> str:
    text = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha256(text.encode()).hexdigest()


def test_golden_names_the_usb_commit():
    assert GOLDEN["usb_repository"] == "microsoft/Semi-supervised-learning"
    assert len(GOLDEN["usb_commit"]) == 40


@pytest.mark.parametrize("key", sorted(GOLDEN["models"]))
def test_parameter_count_and_state_dict_layout_equal_usbs(key):
    builder, num_classes = key.split("/")
    with torch.device("meta"):   # shapes only: WRN-28-8 has 23M parameters
        model = models.create_model(builder, num_classes=int(num_classes))
    facts = GOLDEN["models"][key]
    assert models.parameter_count(model) == facts["parameters"]
    assert len(model.state_dict()) == facts["state_dict_entries"]
    assert keys_sha(model) == facts["state_dict_keys_sha256"]


def test_the_counts_are_the_known_ones():
    counts = {key: facts["parameters"] for key, facts in GOLDEN["models"].items()}
    assert counts == {"wrn_28_2/10": 1_467_626, "wrn_28_2/100": 1_479_236,
                      "wrn_28_8/10": 23_354_858, "wrn_28_8/100": 23_401_028,
                      "wrn_var_37_2/10": 5_929_450, "wrn_var_37_2/100": 5_952_580}


def test_every_seeded_entry_is_a_distinct_model_of_the_golden():
    assert SEEDED_IDS == ["wrn_28_2/10", "wrn_var_37_2/10"]
    assert all(entry["model"] in GOLDEN["models"] for entry in SEEDED)
    assert [entry["input_shape"] for entry in SEEDED] == [[4, 3, 32, 32], [2, 3, 96, 96]]


def seeded_model(entry) -> nn.Module:
    builder, num_classes = entry["model"].split("/")
    torch.manual_seed(entry["torch_seed"])
    return models.create_model(builder, num_classes=int(num_classes))


@pytest.mark.parametrize("entry", SEEDED, ids=SEEDED_IDS)
def test_initial_weights_from_a_seed_equal_usbs(entry):
    model = seeded_model(entry)
    init = entry["init"]
    state = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    assert sorted(state) == sorted(init)
    for key, value in state.items():
        total, squares = init[key]
        assert float(value.double().sum()) == pytest.approx(total, rel=1e-5, abs=1e-4), key
        assert float(value.double().pow(2).sum()) == pytest.approx(squares, rel=1e-5, abs=1e-4), key


@pytest.mark.parametrize("entry", SEEDED, ids=SEEDED_IDS)
def test_logits_in_train_then_eval_mode_equal_usbs(entry):
    model = seeded_model(entry)
    run = entry["run"]
    torch.manual_seed(entry["input_seed"])
    x = torch.randn(*entry["input_shape"])
    model.train()
    with torch.no_grad():
        train_logits, second = model(x)
        model.eval()
        eval_logits, _ = model(x)
    assert second is train_logits   # one classifier: both "heads" are the same
    assert torch.allclose(train_logits, torch.tensor(run["train_logits"]), atol=1e-4)
    assert torch.allclose(eval_logits, torch.tensor(run["eval_logits_after"]), atol=1e-4)
    # every batch norm saw what USB's saw, the unused ``bn1`` of groups 2, 3 (and 4) included
    means = {k for k in model.state_dict() if k.endswith("running_mean")}
    assert means == set(run["bn_running_mean_sums_after"])
    for key, total in run["bn_running_mean_sums_after"].items():
        assert float(model.state_dict()[key].double().sum()) == pytest.approx(total, rel=1e-4, abs=1e-6), key


def test_forward_gives_one_logit_per_class_for_a_32x32_batch():
    model = models.create_model("wrn_28_2", num_classes=10)
    logits, second = model(torch.randn(3, 3, 32, 32))
    assert logits.shape == (3, 10) and second is logits
    assert model.features(torch.randn(2, 3, 32, 32)).shape == (2, 128)


def test_wrn_var_37_2_gives_one_logit_per_class_for_a_96x96_batch_pooled_at_6x6():
    model = models.create_model("wrn_var_37_2", num_classes=10)
    seen = []
    model.bn1.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].shape) and None)
    logits, second = model(torch.randn(3, 3, 96, 96))
    assert logits.shape == (3, 10) and second is logits
    assert seen[0] == (3, 256, 6, 6)   # 96 -> 48 -> 24 -> 12 -> 6: every group halves it
    assert model.features(torch.randn(2, 3, 96, 96)).shape == (2, 256) and model.num_features == 256


def test_wrn_var_37_2_has_four_groups_of_four_blocks_the_first_strided():
    with torch.device("meta"):
        model = models.create_model("wrn_var_37_2", num_classes=10)
    groups = (model.block1, model.block2, model.block3, model.block4)
    assert [group.layer[0].conv1.out_channels for group in groups] == [32, 64, 128, 256]
    assert [group.layer[0].conv1.stride for group in groups] == [(2, 2)] * 4
    assert [group.layer[0].convShortcut.stride for group in groups] == [(2, 2)] * 4
    assert all(block.conv1.stride == (1, 1) for group in groups for block in group.layer[1:])
    assert [len(group.layer) for group in groups] == [4, 4, 4, 4]
    assert model.conv1.stride == (1, 1) and model.conv1.out_channels == 16
    assert model.classifier.in_features == 256 and model.classifier.out_features == 10
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 37
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())


def test_wrn_28_8_widths_for_cifar100():
    with torch.device("meta"):
        model = models.create_model("wrn_28_8", num_classes=100)
    assert [model.block1.layer[0].conv1.out_channels, model.block2.layer[0].conv1.out_channels,
            model.block3.layer[0].conv1.out_channels] == [128, 256, 512]
    assert model.classifier.in_features == 512 and model.classifier.out_features == 100
    assert [len(group.layer) for group in (model.block1, model.block2, model.block3)] == [4, 4, 4]


@pytest.mark.parametrize("name, blocks", [("wrn_28_2", 12), ("wrn_var_37_2", 16)])
def test_batch_norm_momentum_eps_and_leaky_slope_are_usbs(name, blocks):
    model = models.create_model(name, num_classes=10)
    norms = {key: m for key, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert len(norms) == 2 * blocks + 1   # two per block, and the final one
    assert all(m.momentum == 0.001 for m in norms.values())   # PyTorch's convention: decay 0.999
    assert norms.pop("bn1").eps == 1e-3
    assert all(m.eps == 1e-5 for m in norms.values())
    assert wide_resnet.LEAKY_SLOPE == 0.1
    x = torch.linspace(-2, 2, 9)
    assert torch.allclose(torch.nn.functional.leaky_relu(x, wide_resnet.LEAKY_SLOPE), torch.where(x > 0, x, 0.1 * x))


@pytest.mark.parametrize("name", ["wrn_28_2", "wrn_var_37_2"])
def test_first_group_activates_before_the_residual_and_the_others_do_not(name):
    model = models.create_model(name, num_classes=10)
    groups = [getattr(model, f"block{g + 1}") for g in range(model.num_groups)]
    assert len(groups) == {"wrn_28_2": 3, "wrn_var_37_2": 4}[name]
    first_blocks = [group.layer[0] for group in groups]
    assert [b.activate_before_residual for b in first_blocks] == [True] + [False] * (len(groups) - 1)
    assert all(b.convShortcut is not None for b in first_blocks)
    assert all(block.convShortcut is None for group in groups for block in group.layer[1:])
    model.train()
    first, second = model(torch.randn(2, *models.get_model(name).input_size))
    first.sum().backward()
    # USB's first blocks of groups 2 and on discard their bn1's output: no gradient reaches it
    assert all(b.bn1.weight.grad is None for b in first_blocks[1:])
    assert model.block1.layer[0].bn1.weight.grad is not None


def test_initialisation_follows_usbs_rules():
    torch.manual_seed(3)
    model = models.create_model("wrn_28_2", num_classes=10)
    conv = model.block3.layer[1].conv2   # 3x3, 128 -> 128: Kaiming normal on fan-out, gain sqrt(2)
    assert conv.weight.std().item() == pytest.approx((2.0 / (9 * 128)) ** 0.5, rel=0.03)
    fc = model.classifier   # Xavier normal: std sqrt(2 / (fan_in + fan_out))
    assert fc.weight.std().item() == pytest.approx((2.0 / (128 + 10)) ** 0.5, rel=0.15)
    assert torch.all(fc.bias == 0)
    assert model.conv1.bias is not None and not torch.all(model.conv1.bias == 0)   # PyTorch's default
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_the_registry_lists_both_as_not_in_the_paper():
    assert {"wrn_28_2", "wrn_28_8"} <= set(models.list_models())
    for name in ("wrn_28_2", "wrn_28_8"):
        info = models.get_model(name)
        assert info.recipe == "pytorch" and info.input_size == (3, 32, 32)
        assert not info.in_paper and info.init_from_data is None
        assert info.description.startswith("Not in the paper")


def test_the_registry_lists_wrn_var_37_2_for_96x96_images_with_one_head():
    info = models.get_model("wrn_var_37_2")
    assert info.recipe == "pytorch" and info.input_size == (3, 96, 96) and info.heads == 1
    assert not info.in_paper and info.init_from_data is None
    assert info.description.startswith("Not in the paper")
    assert models.parameter_count(info.builder()) == GOLDEN["models"]["wrn_var_37_2/10"]["parameters"]   # STL-10's 10


def test_depth_must_be_6n_plus_4():
    with pytest.raises(ValueError, match="6n \\+ 4"):
        wide_resnet.WideResNet(10, depth=27)
    with pytest.raises(ValueError, match="3 or 4 groups"):
        wide_resnet.WideResNet(10, groups=5)
