"""Settings: the original's experiments as data, typed values, the one composition of a run's
settings from its layers, and settings as run directories keep them."""
import json

import pytest

from mt_repro.cli import main
from mt_repro.config import ConvNetConfig, TrainConfig, load_paper_config
from mt_repro.config.coerce import parse_overrides
from mt_repro.config.compose import convnet_run, load_demo_config, resnet_run
from mt_repro.config.files import original_configs_dir
from mt_repro.config.paper import paper_config_names, read_paper_config
from mt_repro.config.saved import from_saved, to_saved
from mt_repro.config.train import HINTS
from mt_repro.core.errors import BadInput


def resolve(name: str, gpus=None, **overrides) -> TrainConfig:
    return resnet_run(name, label_file="10.txt", gpus=gpus, overrides=overrides)


def test_every_paper_config_names_its_source_and_composes():
    assert paper_config_names() == ["cifar10_1000", "cifar10_4000", "imagenet_10pct"]
    for name in paper_config_names():
        paper = load_paper_config(name)
        assert paper.source.startswith("pytorch/experiments/")
        resolve(name)


def test_cifar10_4000_is_the_papers_configuration_on_four_gpus():
    config = resolve("cifar10_4000")
    assert (config.batch_size, config.labeled_batch_size, config.lr) == (512, 124, 0.2)
    assert (config.epochs, config.lr_rampdown_epochs, config.ema_decay) == (300, 350, 0.99)
    assert (config.consistency, config.consistency_rampup, config.logit_distance_cost) == (100.0, 5, 0.01)
    assert config.nesterov and config.weight_decay == 2e-4 and config.arch == "cifar_shakeshake26"
    assert load_paper_config("cifar10_4000").data_seeds == tuple(range(10, 20))


def test_gpus_rescale_batch_labeled_batch_and_lr_like_the_original_runner():
    one = resolve("cifar10_1000", gpus=1)
    assert (one.batch_size, one.labeled_batch_size, one.lr) == (128, 31, 0.05)
    assert (one.epochs, one.lr_rampdown_epochs, one.ema_decay) == (180, 210, 0.97)
    with pytest.raises(BadInput, match="--gpus must be positive"):
        resolve("cifar10_1000", gpus=0)


def test_overrides_are_typed():
    values = parse_overrides(["lr=0.1", "nesterov=false", "lr-rampdown-epochs=none", "epochs=5"], HINTS)
    assert values == {"lr": 0.1, "nesterov": False, "lr_rampdown_epochs": None, "epochs": 5}
    with pytest.raises(BadInput, match="unknown setting 'learning_rate'"):
        parse_overrides(["learning_rate=1"], HINTS)
    with pytest.raises(BadInput, match="epochs='five' is not a valid int"):
        parse_overrides(["epochs=five"], HINTS)
    with pytest.raises(BadInput, match="key=value"):
        parse_overrides(["epochs"], HINTS)
    with pytest.raises(BadInput, match="epochs='2.5'"):
        parse_overrides(["epochs=2.5"], HINTS)


@pytest.mark.parametrize("changes,message", [
    ({"labeled_batch_size": 128}, "labeled_batch_size (128) must be between 1 and batch_size - 1"),
    ({"lr_rampdown_epochs": 10}, "lr_rampdown_epochs (10) must be >= epochs"),
    ({"consistency_type": "l1"}, "consistency_type 'l1'"),
    ({"exclude_unlabeled": True}, "exactly one of exclude_unlabeled and labeled_batch_size"),
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"lr": -1.0}, "lr must be >= 0"),
])
def test_inconsistent_configs_are_refused_with_the_reason(changes, message):
    config = resolve("cifar10_4000", gpus=1).replace(**changes)
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


# --- one composition, in layers -------------------------------------------------------------------
def test_a_run_is_the_experiment_then_the_method_then_the_run_then_set():
    config = resnet_run("cifar10_4000", label_file="10.txt", method="temporal_ensembling", gpus=1,
                        run={"epochs": 7, "lr_rampdown_epochs": 8}, overrides={"consistency": 3.0})
    assert config.batch_size == 128 and config.nesterov                     # the experiment
    assert config.method == "temporal_ensembling" and config.consistency_rampup == 80   # its paper
    assert config.epochs == 7 and config.labels == "10.txt"                   # the run's choices
    assert config.consistency == 3.0                                          # --set, last


def test_a_layers_error_names_the_layer():
    with pytest.raises(BadInput, match=r"^--set: epochs='x' is not a valid int"):
        resnet_run("cifar10_4000", label_file="10.txt", overrides={"epochs": "x"})
    with pytest.raises(BadInput, match=r"^run: unknown setting\(s\) epoch"):
        resnet_run("cifar10_4000", label_file="10.txt", run={"epoch": 3})
    with pytest.raises(BadInput, match="unknown method 'nope'"):
        resnet_run("cifar10_4000", label_file="10.txt", method="nope")
    with pytest.raises(BadInput, match=r"^--set: unknown setting\(s\) lr"):
        convnet_run("svhn_final_eval", n_labeled=250, overrides={"lr": 0.1})  # the ResNet runs' name


def test_the_convnet_runners_methods_keep_the_runners_settings():
    mean_teacher = convnet_run("svhn_final_eval", n_labeled=250)
    pi = convnet_run("svhn_final_eval", n_labeled=250, method="pi_model")
    assert (mean_teacher.method, pi.method) == ("mean_teacher", "pi_model")
    assert mean_teacher.replace(method="pi_model") == pi     # the runner ran both: only the method differs
    mixmatch = convnet_run("svhn_final_eval", n_labeled=250, method="mixmatch")
    assert mixmatch.max_consistency_cost == 75.0 and mixmatch.n_labeled_per_batch == 1
    assert mean_teacher.max_consistency_cost == 1.0 and mean_teacher.training_length == 180000


def test_the_demo_config_is_every_methods_start():
    demo = load_demo_config()
    assert (demo.labels, demo.seeds) == (100, 3) and demo.run["arch"] == "digits_convnet"
    with pytest.raises(BadInput, match="demo config missing.toml does not exist"):
        load_demo_config("missing.toml")


# --- settings as run directories keep them ---------------------------------------------------------
def test_saved_settings_name_their_recipe_and_read_back_the_same():
    train = resolve("cifar10_4000")
    convnet = convnet_run("svhn_final_eval", n_labeled=250, method="pi_model")
    for config in (train, convnet):
        saved = json.loads(json.dumps(to_saved(config)))
        assert saved["recipe"] == config.recipe.name and from_saved(saved, "config.json") == config
    with pytest.raises(BadInput, match="unknown recipe 'keras'"):
        from_saved({**to_saved(train), "recipe": "keras"}, "config.json")
    with pytest.raises(BadInput, match="is not a configuration"):
        from_saved([1, 2], "config.json")


def test_settings_saved_before_the_recipes_were_named_still_read():
    old_resnet = {k: v for k, v in to_saved(resolve("cifar10_4000")).items() if k != "recipe"}
    assert isinstance(from_saved(old_resnet, "config.json"), TrainConfig)
    old_convnet = {k: v for k, v in ConvNetConfig().to_dict().items()
                   if k not in ("method", "method_options", "arch", "data_dir", "out_dir", "mode", "compile")}
    for model, method in (("pi", "pi_model"), ("supervised", "supervised"), ("mean_teacher", "mean_teacher")):
        config = from_saved({**old_convnet, "model": model, "ema_consistency": model != "pi"}, "config.json")
        assert isinstance(config, ConvNetConfig) and config.method == method
    with pytest.raises(BadInput, match="model 'resnet'"):
        from_saved({**old_convnet, "model": "resnet"}, "config.json")


def test_convnet_settings_are_checked():
    for changes, message in (({"consistency_trust": 2.0}, "consistency_trust must be in [0, 1]"),
                             ({"num_logits": 3}, "num_logits must be 1 or 2"),
                             ({"n_labeled": 0}, "n_labeled must be a positive number"),
                             ({"mode": "quick"}, "mode 'quick'"),
                             ({"compile": True}, "compile is a fast-mode setting"),
                             ({"width": 0.0}, "width must be positive")):
        with pytest.raises(BadInput, match=message.replace("[", r"\[").replace("]", r"\]")):
            ConvNetConfig().replace(**changes).validate()
