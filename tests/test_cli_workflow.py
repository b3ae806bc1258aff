"""The command line as a researcher meets it: help, version, own config, own split."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from bench.cli import build_parser, main
from bench.config import ConfigError, load_config
from bench.datasets.splits import Split, make_split

REPO = Path(__file__).resolve().parent.parent


def subcommands(parser: argparse.ArgumentParser, prefix=("bench",)):
    """Every (name, parser) of the command tree, the top level included."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommands(sub, (*prefix, name))


def test_every_command_has_a_description_and_examples_and_every_option_a_help_text():
    for name, parser in subcommands(build_parser()):
        if name == ("bench", "data"):  # a group: its help lists its subcommands
            continue
        label = " ".join(name)
        assert parser.description, f"{label}: no description"
        assert parser.epilog and "examples:" in parser.epilog, f"{label}: no examples"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            assert action.help, f"{label} {'/'.join(action.option_strings) or action.dest}: no help"


def test_building_the_parser_imports_no_heavy_module():
    probe = (
        "import sys, bench.cli; bench.cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'monai', 'pandas', 'timm') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_version_comes_from_the_package_metadata(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert version("bench-fedssl") in capsys.readouterr().out


def test_both_command_names_are_installed():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["bench"] == scripts["bench-fedssl"] == "bench.cli:main"


def test_config_file_is_merged_over_the_preset_and_under_set(tmp_path):
    mine = tmp_path / "my.yaml"
    mine.write_text("pretrain:\n  rounds: 7\n  lr: 0.01\nsplit:\n  folds: 2\n")
    config = load_config("tiny", ["pretrain.lr=0.02"], config_file=mine)
    assert config["pretrain"]["rounds"] == 7  # the file over the preset (3)
    assert config["pretrain"]["lr"] == 0.02  # --set over the file
    assert config["split"]["folds"] == 2 and config["split"]["clients"] == 2  # preset kept


@pytest.mark.parametrize(
    "content, message",
    [
        ("pretrain:\n  roundz: 3\n", "unknown option 'pretrain.roundz'"),
        ("- a list\n", "expected a mapping"),
        ("pretrain: [\n", "not valid YAML"),
        ("preset: paper\n", "'preset' is chosen with --preset"),
    ],
)
def test_bad_config_file_is_one_line_naming_it(tmp_path, capsys, content, message):
    mine = tmp_path / "my.yaml"
    mine.write_text(content)
    code = main(["run", "--methods", "random", "--config", str(mine), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("bench: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def records():
    from bench.datasets.records import FrameRecord, PatientRecord

    out = []
    for i in range(1, 13):
        frame = FrameRecord("ED", Path(f"p{i}.nii.gz"), Path(f"p{i}_gt.nii.gz"))
        out.append(PatientRecord(f"patient{i:03d}", "training", "NOR", [frame]))
    return out


@pytest.fixture
def split_file(tmp_path):
    split = make_split(records(), clients=3, n_values=(1, 2), folds=2, test="holdout", seed=4)
    return split.save(tmp_path / "split.json")


def test_split_file_decides_the_split_options(split_file):
    params = Split.load(split_file).params
    config = load_config("tiny", [], split_params=params)
    assert config["split"]["clients"] == 3 and config["split"]["n_values"] == [1, 2]
    assert config["split"]["folds"] == 2 and config["split"]["seed"] == 4
    # An option that agrees with the file is fine; one that contradicts it is an error.
    assert load_config("tiny", ["split.clients=3"], split_params=params)["split"]["clients"] == 3
    with pytest.raises(ConfigError, match=r"split.clients=2 contradicts the split file"):
        load_config("tiny", ["split.clients=2"], split_params=params)


def test_split_flag_contradicting_the_file_fails_before_anything_is_written(
    split_file, tmp_path, capsys
):
    out = tmp_path / "run"
    args = ["run", "--methods", "random", "--split", str(split_file), "--out", str(out)]
    assert main([*args, "--folds", "5"]) == 2
    err = capsys.readouterr().err
    assert "split.folds=5 contradicts the split file" in err and not out.exists()


def test_edited_split_file_is_refused(split_file, tmp_path, capsys):
    text = split_file.read_text().replace('"seed": 4', '"seed": 5')
    split_file.write_text(text)
    assert main(["run", "--methods", "random", "--split", str(split_file)]) == 2
    assert str(split_file) in capsys.readouterr().err


def test_split_naming_patients_absent_from_the_data_is_refused(tmp_path):
    from bench.data import check_split_matches_data
    from bench.datasets.errors import DataError

    split = make_split(records(), clients=3, n_values=(1, 2), folds=2, test="holdout", seed=4)
    gone = split.clients[1].all_test_patients()[0]
    fewer = [r for r in records() if r.patient_id != gone]
    with pytest.raises(DataError, match=rf"client 1 test patient '{gone}' is not in"):
        check_split_matches_data(split, fewer, tmp_path / "split.json", tmp_path)
    check_split_matches_data(split, records(), tmp_path / "split.json", tmp_path)


def test_a_run_folder_keeps_its_split(split_file, tmp_path):
    from bench.runner import adopt_split_file

    run = tmp_path / "run"
    run.mkdir()
    adopt_split_file(run, split_file)
    assert Split.load(run / "split.json").hash == Split.load(split_file).hash
    other = make_split(records(), clients=3, n_values=(1, 2), folds=2, test="holdout", seed=9)
    other_file = other.save(tmp_path / "other.json")
    with pytest.raises(ConfigError, match="already uses split"):
        adopt_split_file(run, other_file)
