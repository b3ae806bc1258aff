"""The presets as the README's table and docs/PROTOCOL.md describe them are the preset files."""

import re
from pathlib import Path

import pytest

from bench.config import available_presets, load_config

REPO = Path(__file__).resolve().parent.parent


def readme_rows() -> dict[str, str]:
    text = (REPO / "README.md").read_text()
    return {m[1]: m[0] for m in re.finditer(r"^\| `([\w-]+)` \|.*$", text, re.MULTILINE)}


def protocol_items() -> dict[str, str]:
    text = (REPO / "docs" / "PROTOCOL.md").read_text()
    section = text[text.index("## Presets") :]
    items = re.findall(r"^- `([\w-]+)`: (.*?)(?=^- `|^\s*$)", section, re.MULTILINE | re.DOTALL)
    return {name: " ".join(body.split()) for name, body in items}


def described(line: str) -> dict:
    """The preset values a line of documentation states."""
    found = {
        "clients": int(re.search(r"(\d+) clients", line)[1]),
        "n_values": [
            int(n) for n in re.search(r"N = (\d+(?:, \d+\b(?! folds?\b))*)", line)[1].split(",")
        ],
        "folds": int(re.search(r"(\d+) folds?\b", line)[1]),
        "size": int(re.search(r"(\d+) x \1", line)[1]),
        "spacing_mm": float(re.search(r"at ([\d.]+) mm", line)[1]),
    }
    if "local and federated fine-tuning" in line:
        found["modes"] = ["local", "federated"]
    elif "local fine-tuning" in line:
        found["modes"] = ["local"]
    if "ED only" in line:
        found["phases"] = ["ED"]
    elif "ED and ES" in line:
        found["phases"] = ["ED", "ES"]
    return found


def actual(preset: str) -> dict:
    config = load_config(preset)
    return {
        "clients": config["split"]["clients"],
        "n_values": sorted(config["split"]["n_values"]),
        "folds": config["split"]["folds"],
        "size": config["data"]["preprocess"]["size"],
        "spacing_mm": float(config["data"]["preprocess"]["spacing_mm"]),
        "modes": config["finetune"]["modes"],
        "phases": config["data"]["phases"],
    }


@pytest.mark.parametrize("source", [readme_rows, protocol_items], ids=["README", "PROTOCOL"])
def test_every_preset_is_documented_with_its_values(source):
    docs = source()
    assert sorted(docs) == available_presets()
    for preset, line in docs.items():
        stated = described(line)
        assert set(stated) == set(actual(preset)), (preset, line)  # every value is stated
        assert stated == actual(preset), (preset, line)


def test_the_check_notices_a_wrong_value():
    line = readme_rows()["tiny"].replace("1 fold", "2 folds")
    assert described(line)["folds"] != actual("tiny")["folds"]
