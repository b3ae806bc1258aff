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


def _options(tree: dict, where=()) -> set[str]:
    out = set()
    for key, value in tree.items():
        if isinstance(value, dict) and (*where, key) != ("pretrain", "methods"):
            out |= _options(value, (*where, key))
        else:
            out.add(".".join((*where, key)))
    return out


def _schema_options(cls, where=()) -> set[str]:
    import typing

    from bench.config_schema import Section

    out = set()
    for key, hint in typing.get_type_hints(cls).items():
        if isinstance(hint, type) and issubclass(hint, Section):
            out |= _schema_options(hint, (*where, key))
        else:
            out.add(".".join((*where, key)))
    return out


def test_the_schema_has_every_option_of_default_yaml():
    import yaml

    from bench.config import PRESET_DIR
    from bench.config_schema import Config

    defaults = yaml.safe_load((PRESET_DIR / "default.yaml").read_text())
    assert _schema_options(Config) == _options(defaults) | {"preset"}


def test_every_preset_passes_the_schema():
    from bench.config import available_presets

    for preset in (None, *available_presets()):
        load_config(preset)


def test_options_read_as_attributes_and_as_keys():
    config = load_config("tiny", ["finetune.rounds=7"])
    assert config.finetune.rounds == config["finetune"]["rounds"] == 7
    assert config.data.preprocess.size == 64
    config.run.threads = 3  # writes through to the mapping
    assert config["run"]["threads"] == 3


def test_the_typed_config_hashes_and_saves_as_the_plain_tree():
    import copy
    import json
    import pickle

    import yaml

    config = load_config("tiny")
    plain = json.loads(json.dumps(config))
    assert type(plain) is dict and config_hash(plain) == config_hash(config)
    assert yaml.safe_load(yaml.safe_dump(config, sort_keys=True)) == plain
    assert type(copy.deepcopy(config).run.flower).__name__ == "FlowerConfig"
    assert pickle.loads(pickle.dumps(config)).finetune.rounds == config.finetune.rounds


@pytest.mark.parametrize(
    "override, message",
    [
        ("finetune.lr=fast", "option finetune.lr='fast'; expected a number > 0"),
        ("finetune.lr=-1", "option finetune.lr=-1; expected a number > 0"),
        ("finetune.rounds=0", "option finetune.rounds=0; expected an integer >= 1"),
        ("finetune.rounds=abc", "option finetune.rounds='abc'; expected an integer >= 1"),
        ("finetune.rounds=2.5", "option finetune.rounds=2.5; expected an integer >= 1"),
        ("data.preprocess.size=0", "option data.preprocess.size=0; expected an integer >= 1"),
        ("split.clients=0", "option split.clients=0; expected an integer >= 1"),
        ("split.n_values=[1, 0]", "option split.n_values=[1, 0]; expected a list, each item"),
        ("split.test_fraction=1", "option split.test_fraction=1; expected a number > 0 and < 1"),
        ("run.channels_last=1", "option run.channels_last=1; expected true or false"),
        ("run.device=tpu", "option run.device='tpu'; expected one of ['cpu', 'cuda']"),
        ("finetune.modes=[fed]", "option finetune.modes=['fed']; expected a list, each item one"),
        ("data.root=[a]", "option data.root=['a']; expected a string or null"),
        ("data.preprocess.clip_percentiles=[99, 1]", "clip_percentiles=[99, 1]; expected [low"),
        ("pretrain.methods=3", "option 'pretrain.methods' is a section; got 3"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_option(override, message):
    with pytest.raises(ConfigError) as raised:
        load_config("tiny", [override])
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_an_integer_is_accepted_as_a_number_and_kept_as_written():
    config = load_config("tiny", ["finetune.lr=1"])
    assert config.finetune.lr == 1 and type(config.finetune.lr) is int


def test_protocol_settings_sit_above_the_preset_and_below_set():
    own = load_config("tiny")
    assert own["split"]["protocol"] == "own" and own["split"]["clients"] == 2
    chaitanya = load_config("tiny", ["split.protocol=chaitanya"])
    assert chaitanya["split"]["clients"] == 1 and chaitanya["split"]["folds"] == 5
    assert chaitanya["data"]["phases"] == ["ED"] and chaitanya["data"]["preprocess"]["n4"]
    assert chaitanya["evaluation"]["native_dice"] and chaitanya["finetune"]["modes"] == ["local"]
    assert not load_config("tiny", ["split.protocol=chaitanya", "data.preprocess.n4=false"])[
        "data"
    ]["preprocess"]["n4"]
    assert load_config("tiny", ["split.protocol=fcl"])["split"]["folds"] == 5
    assert load_config("paper")["split"]["protocol"] == "fcl"
    with pytest.raises(ConfigError, match="split.protocol='paper'"):
        load_config(None, ["split.protocol=paper"])
