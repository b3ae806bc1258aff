"""Shareable weights (bench/weights.py): safetensors + sidecar, checked against the model."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from bench.backbone import build_unet
from bench.config import load_config
from bench.weights import (
    WeightsError,
    describe,
    export_weights,
    load_pretrained,
    read_pretrained,
    read_weights,
    save_weights,
)

CONFIG = load_config("tiny")


def parts(seed: int, model_config=None) -> dict:
    torch.manual_seed(seed)
    unet = build_unet(model_config or CONFIG["model"], out_channels=1)
    return {"encoder": unet.encoder.state_dict()}


def meta(**extra) -> dict:
    return describe(
        "pretrained", method="simclr", config=CONFIG, split_hash="0123", dataset="acdc", **extra
    )


def test_round_trip_shared_and_per_client(tmp_path):
    shared = save_weights(tmp_path / "fed.safetensors", [parts(0)] * 3, meta(seed=0))
    clients, description = read_weights(shared)
    assert description["clients"] == "shared" and description["num_clients"] == 3
    assert len(clients) == 3
    for key, value in parts(0)["encoder"].items():
        assert torch.equal(clients[2]["encoder"][key], value)
    local = save_weights(tmp_path / "local.safetensors", [parts(0), parts(1)], meta(seed=0))
    clients, description = read_weights(local)
    assert description["clients"] == 2
    key = next(iter(parts(1)["encoder"]))
    assert torch.equal(clients[1]["encoder"][key], parts(1)["encoder"][key])
    sidecar = json.loads((tmp_path / "local.json").read_text())
    for field in ("method", "parts", "model", "config_hash", "split_hash", "code_version"):
        assert field in sidecar
    assert sidecar["preprocessing"]["size"] == CONFIG["data"]["preprocess"]["size"]


def test_empty_state_is_refused_not_taken_for_random_init(tmp_path):
    with pytest.raises(ValueError, match="nothing to save"):
        save_weights(tmp_path / "empty.safetensors", [{}, {}], meta())
    path = save_weights(tmp_path / "ok.safetensors", [parts(0)], meta())
    model = build_unet(CONFIG["model"], out_channels=1)
    with pytest.raises(WeightsError, match="the method's fine-tuning loads"):
        read_pretrained(path, model, ("encoder", "decoder"))


def test_parts_of_another_model_are_refused(tmp_path):
    other = {**CONFIG["model"], "widths": [8, 16, 32, 128]}
    path = save_weights(tmp_path / "other.safetensors", [parts(0, other)], meta())
    with pytest.raises(WeightsError, match="has shape"):
        read_pretrained(path, build_unet(CONFIG["model"], out_channels=1), ("encoder",))


def test_changed_file_is_refused(tmp_path):
    path = save_weights(tmp_path / "w.safetensors", [parts(0)], meta())
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(WeightsError, match="SHA-256 does not match"):
        read_weights(path)


def test_a_pickle_is_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(WeightsError, match="not a safetensors weights file"):
        read_weights(path)
    assert not marker.exists()


def test_export_needs_a_client_when_clients_differ(tmp_path):
    local = save_weights(tmp_path / "local.safetensors", [parts(0), parts(1)], meta())
    with pytest.raises(WeightsError, match="choose one with --client"):
        export_weights(local, tmp_path / "x.safetensors")
    with pytest.raises(WeightsError, match="--client 5"):
        export_weights(local, tmp_path / "x.safetensors", client=5)
    out, description = export_weights(local, tmp_path / "c1.safetensors", client=1)
    assert description["client"] == 1 and description["kind"] == "export"
    encoder = load_pretrained(out, part="encoder")
    key = next(iter(parts(1)["encoder"]))
    assert torch.equal(encoder.state_dict()[key], parts(1)["encoder"][key])


def test_load_pretrained_rebuilds_a_timm_unet(tmp_path):
    timm_model = {**CONFIG["model"], "encoder": "timm/resnet18"}
    config = {**CONFIG, "model": timm_model}
    description = describe(
        "pretrained", method="byol", config=config, split_hash=None, dataset=None
    )
    path = save_weights(tmp_path / "timm.safetensors", [parts(0, timm_model)], description)
    unet = load_pretrained(path, out_channels=3)
    assert unet(torch.rand(1, 1, 64, 64)).shape == (1, 3, 64, 64)
    key = next(iter(parts(0, timm_model)["encoder"]))
    assert torch.equal(unet.encoder.state_dict()[key], parts(0, timm_model)["encoder"][key])
