import pytest

from bench.config import ConfigError, config_hash, load_config, parse_override


def test_presets_override_defaults():
    tiny = load_config("tiny")
    assert tiny["split"]["clients"] == 2 and tiny["preset"] == "tiny"
    assert tiny["data"]["preprocess"]["normalise"] == "minmax"  # untouched default


def test_unknown_option_is_named():
    with pytest.raises(ConfigError, match="unknown option 'pretrain.roundz'"):
        load_config("tiny", ["pretrain.roundz=3"])


def test_unknown_preset_is_named():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_config("huge")


def test_invalid_choice_is_named():
    with pytest.raises(ConfigError, match="pretrain.setting"):
        load_config("tiny", ["pretrain.setting=everywhere"])


def test_size_must_suit_the_unet_depth():
    with pytest.raises(ConfigError, match="divisible"):
        load_config("tiny", ["data.preprocess.size=60"])


def test_override_values_are_yaml():
    assert parse_override("split.n_values=[1, 8]") == {"split": {"n_values": [1, 8]}}
    assert load_config("tiny", ["pretrain.methods={fcl: {temperature: 0.2}}"])["pretrain"][
        "methods"
    ] == {"fcl": {"temperature": 0.2}}


def test_hash_follows_content():
    assert config_hash(load_config("tiny")) == config_hash(load_config("tiny"))
    assert config_hash(load_config("tiny")) != config_hash(load_config("tiny", ["run.seeds=[1]"]))
