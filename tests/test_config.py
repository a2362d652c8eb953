import pytest

from mt_repro.cli import main
from mt_repro.config import (TrainConfig, load_paper_config, paper_config_names, parse_overrides,
                             read_paper_config)
from mt_repro.errors import BadInput


def test_every_paper_config_names_its_source_and_resolves():
    assert paper_config_names() == ["cifar10_1000", "cifar10_4000", "imagenet_10pct"]
    for name in paper_config_names():
        paper = load_paper_config(name)
        assert paper.source.startswith("pytorch/experiments/")
        paper.resolve()


def test_cifar10_4000_is_the_papers_configuration_on_four_gpus():
    config = load_paper_config("cifar10_4000").resolve()
    assert (config.batch_size, config.labeled_batch_size, config.lr) == (512, 124, 0.2)
    assert (config.epochs, config.lr_rampdown_epochs, config.ema_decay) == (300, 350, 0.99)
    assert (config.consistency, config.consistency_rampup, config.logit_distance_cost) == (100.0, 5, 0.01)
    assert config.nesterov and config.weight_decay == 2e-4 and config.arch == "cifar_shakeshake26"
    assert load_paper_config("cifar10_4000").data_seeds == tuple(range(10, 20))


def test_gpus_rescale_batch_labeled_batch_and_lr_like_the_original_runner():
    one = load_paper_config("cifar10_1000").resolve(gpus=1)
    assert (one.batch_size, one.labeled_batch_size, one.lr) == (128, 31, 0.05)
    assert (one.epochs, one.lr_rampdown_epochs, one.ema_decay) == (180, 210, 0.97)
    with pytest.raises(BadInput, match="--gpus must be positive"):
        load_paper_config("cifar10_1000").resolve(gpus=0)


def test_overrides_are_typed():
    values = parse_overrides(["lr=0.1", "nesterov=false", "lr-rampdown-epochs=none", "epochs=5"])
    assert values == {"lr": 0.1, "nesterov": False, "lr_rampdown_epochs": None, "epochs": 5}
    with pytest.raises(BadInput, match="unknown setting 'learning_rate'"):
        parse_overrides(["learning_rate=1"])
    with pytest.raises(BadInput, match="epochs='five' is not a valid int"):
        parse_overrides(["epochs=five"])
    with pytest.raises(BadInput, match="key=value"):
        parse_overrides(["epochs"])
    with pytest.raises(BadInput, match="epochs='2.5'"):
        parse_overrides(["epochs=2.5"])


@pytest.mark.parametrize("changes,message", [
    ({"labeled_batch_size": 128}, "labeled_batch_size (128) must be between 1 and batch_size - 1"),
    ({"lr_rampdown_epochs": 10}, "lr_rampdown_epochs (10) must be >= epochs"),
    ({"consistency_type": "l1"}, "consistency_type 'l1'"),
    ({"arch": "resnet18"}, "arch 'resnet18'"),
    ({"exclude_unlabeled": True}, "exactly one of exclude_unlabeled and labeled_batch_size"),
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"lr": -1.0}, "lr must be >= 0"),
])
def test_inconsistent_configs_are_refused_with_the_reason(changes, message):
    config = load_paper_config("cifar10_4000").resolve(gpus=1).replace(**changes)
    with pytest.raises(BadInput) as error:
        config.validate()
    assert message in str(error.value)


def test_config_from_dict_refuses_unknown_and_mistyped_settings():
    with pytest.raises(BadInput, match="unknown setting"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(BadInput, match="nesterov='sometimes'"):
        TrainConfig.from_dict({"nesterov": "sometimes"})


def test_broken_config_files_are_bad_input(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("name = [unclosed\n")
    with pytest.raises(BadInput, match="cannot be read"):
        read_paper_config(broken)
    partial = tmp_path / "partial.toml"
    partial.write_text('name = "x"\n')
    with pytest.raises(BadInput, match="lacks"):
        read_paper_config(partial)
    typo = tmp_path / "typo.toml"
    typo.write_text(load_paper_config_text().replace("ema_decay = 0.99", "ema_decy = 0.99"))
    with pytest.raises(BadInput, match="unknown setting"):
        read_paper_config(typo)


def load_paper_config_text() -> str:
    from mt_repro.config import original_configs_dir
    return (original_configs_dir() / "cifar10_4000.toml").read_text()


def test_cli_refuses_bad_overrides_and_data_seeds_in_one_line(tmp_path, capsys):
    for args, fragment in (
        (["cifar10", "--set", "epochs=lots"], "epochs='lots'"),
        (["cifar10", "--data-seed", "3", "--label-dir", str(tmp_path)], "the paper used 10..19"),
        (["cifar10", "--label-dir", str(tmp_path)], "label file"),
        (["cifar10", "--labels", "250"], "Invalid value for '--labels'"),
        (["cifar10", "--label-file", "a.txt", "--data-seed", "10"], "not both"),
    ):
        code = main(args)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("mt-repro: error:"), (args, err)
        assert fragment in err[0], (args, err)
