"""The bad-input corpus: every way a user (or an attacker) can hand bench a wrong input.

Each case prepares its input, runs one `bench` command in-process and expects either
a user error (exit code 2, one line ``bench: error: ...`` naming the file or option,
no traceback, the run folder's ``results/`` unchanged, nothing executed from a file)
or the documented recovery (a corrupted unit recomputed to the rows of the untouched
run, every other unit unchanged). Run-folder, split and report cases mutate copies of
ONE real tiny run (federated pretraining and local fine-tuning), made once per session.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from bench.cli import main

pytestmark = pytest.mark.slow

# The smallest run that still pretrains (simclr, federated) and fine-tunes (local).
RUN_ARGS = [
    "run",
    "--methods",
    "simclr,random",
    "--preset",
    "tiny",
    "--n-values",
    "1",
    "--folds",
    "1",
    "--modes",
    "local",
    "--no-progress",
    *("--set", "pretrain.rounds=1", "--set", "pretrain.local_steps=1"),
    *("--set", "finetune.rounds=1", "--set", "finetune.local_steps=1"),
    *("--set", "data.preprocess.size=32"),
]
SIMCLR_UNIT = "method-simclr_seed-0_mode-local_n-1_fold-0"
RANDOM_UNIT = "method-random_seed-0_mode-local_n-1_fold-0"
PATIENT = "database/training/patient001"
IMAGE = f"{PATIENT}/patient001_frame01.nii.gz"
LABEL = f"{PATIENT}/patient001_frame01_gt.nii.gz"


def bench(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of one in-process `bench` command; an exception that
    escapes is what a user would see as a traceback, so it is reported as one."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except Exception:  # noqa: BLE001 - the corpus counts it
            import traceback

            traceback.print_exc(file=err)
            code = -1
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    saved = os.environ.get("BENCH_CACHE_DIR")
    os.environ["BENCH_CACHE_DIR"] = str(root / "cache")
    run = root / "tiny"
    code, _, err = bench([*RUN_ARGS, "--out", run])
    assert code == 0, err[-3000:]
    yield run
    if saved is None:
        os.environ.pop("BENCH_CACHE_DIR", None)
    else:
        os.environ["BENCH_CACHE_DIR"] = saved


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns(".bench-lock"))
    return to


def file_hashes(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------ the cases


@dataclass
class Case:
    """``prepare(ctx)`` returns the argv; ``names``: what the error line must name
    (``{run}``, ``{data}``, ``{tmp}`` filled in); ``recover``: unit files the command must
    recompute instead of failing; ``ok``: a command that must succeed (e.g. a stale lock)."""

    id: str
    kind: str  # data | cli | run | split | report
    prepare: object
    names: list[str] = field(default_factory=list)
    recover: list[str] = field(default_factory=list)
    ok: bool = False


@dataclass
class Ctx:
    tiny: Path
    tmp: Path
    _run: Path | None = None
    _data: Path | None = None
    marker: Path | None = None

    @property
    def run(self) -> Path:
        if self._run is None:
            self._run = copy_run(self.tiny, self.tmp / "run")
        return self._run

    @property
    def data(self) -> Path:
        if self._data is None:
            self._data = self.tmp / "data"
            shutil.copytree(self.tiny / "data" / "synthetic-acdc", self._data)
        return self._data

    def run_args(self, *extra) -> list:
        return [*RUN_ARGS, "--out", self.run, *extra]

    def report_args(self, *extra) -> list:
        return ["report", self.run, "--out", self.tmp / "report", "--no-qualitative", "--quiet"]

    def pickle_bomb(self, path: Path) -> None:
        """A torch file whose unpickling would create ``self.marker``."""
        self.marker = self.tmp / "code-ran"
        buffer = io.BytesIO()
        torch.save({"state": _Payload(self.marker)}, buffer)
        path.write_bytes(buffer.getvalue())


class _Payload:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


CASES: list[Case] = []


def case(id, kind, names=(), recover=(), ok=False):
    def register(prepare):
        CASES.append(Case(id, kind, prepare, list(names), list(recover), ok))
        return prepare

    return register


# -- data: `bench data check` on a copy of the tiny run's synthetic ACDC folder -------


def _rewrite(path: Path, edit) -> None:
    image = nib.load(path)
    data, header = np.asanyarray(image.dataobj), image.header.copy()
    data, header = edit(data, header)
    nib.save(nib.Nifti1Image(data, image.affine, header), path)


def _set_pixdim(path: Path, index: int, value: float) -> None:
    """Writes pixdim[index] into the file's header bytes as is (nibabel would fix 0 to 1)."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[76 + 4 * index : 80 + 4 * index] = struct.pack("<f", value)  # NIfTI-1 pixdim
    path.write_bytes(gzip.compress(bytes(raw)))


def _raw_header(dims, *, nifti2=False, dtype=np.int16, pixdim=(1.0, 1.0, 1.0)) -> bytes:
    header = nib.Nifti2Header() if nifti2 else nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header["dim"][: len(dims) + 1] = [len(dims), *dims]
    header["pixdim"][1:4] = pixdim
    header["vox_offset"] = 544 if nifti2 else 352
    return header.binaryblock + b"\x00" * 4


def check_data(ctx):
    return ["data", "check", "--data", ctx.data, "--no-progress"]


@case("gzip-bomb", "data", names=[IMAGE, "bomb"])
def _(ctx):
    raw = _raw_header((8, 8, 8)) + b"\x00" * (64 << 20)  # 64 MiB where 1 KiB is declared
    (ctx.data / IMAGE).write_bytes(gzip.compress(raw, compresslevel=1))
    return check_data(ctx)


@case("header-claims-1GiB", "data", names=[IMAGE, "header implies"])
def _(ctx):
    (ctx.data / IMAGE).write_bytes(gzip.compress(_raw_header((1024, 1024, 512)) + b"\0" * 64))
    return check_data(ctx)


@case("dims-32767-cubed", "data", names=[IMAGE, "caps"])
def _(ctx):
    (ctx.data / IMAGE).write_bytes(gzip.compress(_raw_header((32767, 32767, 32767))))
    return check_data(ctx)


@case("nifti2-100000-cubed", "data", names=[IMAGE, "caps"])
def _(ctx):
    header = _raw_header((100000, 100000, 100000), nifti2=True)
    (ctx.data / IMAGE).write_bytes(gzip.compress(header))
    return check_data(ctx)


@case("pixdim-0-in-image", "data", names=[IMAGE, "pixdim"])
def _(ctx):
    _set_pixdim(ctx.data / IMAGE, 1, 0.0)
    return check_data(ctx)


@case("pixdim-nan-in-label", "data", names=[LABEL, "pixdim"])
def _(ctx):
    _set_pixdim(ctx.data / LABEL, 2, float("nan"))
    return check_data(ctx)


@case("pixdim-negative", "data", names=[IMAGE, "pixdim"])
def _(ctx):
    _set_pixdim(ctx.data / IMAGE, 3, -2.0)
    return check_data(ctx)


@case("truncated-gz", "data", names=[IMAGE])
def _(ctx):
    path = ctx.data / IMAGE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return check_data(ctx)


@case("empty-image-file", "data", names=[IMAGE, "empty"])
def _(ctx):
    (ctx.data / IMAGE).write_bytes(b"")
    return check_data(ctx)


@case("not-nifti", "data", names=[IMAGE])
def _(ctx):
    (ctx.data / IMAGE).write_bytes(gzip.compress(b"hello, I am not an image" * 40))
    return check_data(ctx)


@case("label-value-7", "data", names=[LABEL, "label values 7"])
def _(ctx):
    def edit(data, header):
        data = data.copy()
        data.flat[0] = 7
        return data, header

    _rewrite(ctx.data / LABEL, edit)
    return check_data(ctx)


@case("nan-intensities", "data", names=[IMAGE, "NaN"])
def _(ctx):
    def edit(data, header):
        data = data.astype(np.float32)
        data.flat[0] = np.nan
        header.set_data_dtype(np.float32)
        return data, header

    _rewrite(ctx.data / IMAGE, edit)
    return check_data(ctx)


@case("label-shape-differs", "data", names=[LABEL, "shape"])
def _(ctx):
    _rewrite(ctx.data / LABEL, lambda data, header: (data[:-1], header))
    return check_data(ctx)


@case("negative-dimension", "data", names=[IMAGE, "below 1"])
def _(ctx):
    (ctx.data / IMAGE).write_bytes(gzip.compress(_raw_header((8, -8, 8))))
    return check_data(ctx)


@case("all-zero-image-warns", "data", names=["warning: ", IMAGE, "all-zero"], ok=True)
def _(ctx):
    _rewrite(ctx.data / IMAGE, lambda data, header: (np.zeros_like(data), header))
    return check_data(ctx)


@case("one-voxel-volume-warns", "data", names=["warning: ", IMAGE, "one-voxel"], ok=True)
def _(ctx):
    one = np.ones((1, 1, 1), np.int16)
    _rewrite(ctx.data / IMAGE, lambda data, header: (one, header))
    _rewrite(ctx.data / LABEL, lambda data, header: (np.zeros((1, 1, 1), np.uint8), header))
    return check_data(ctx)


@case("not-a-dataset-folder", "data", names=["{tmp}/empty"])
def _(ctx):
    (ctx.tmp / "empty").mkdir()
    return ["data", "check", "--data", ctx.tmp / "empty", "--no-progress"]


@case("run-on-bad-data", "data", names=[IMAGE, "pixdim"])
def _(ctx):
    _set_pixdim(ctx.data / IMAGE, 1, 0.0)
    return [*RUN_ARGS, "--data", ctx.data, "--out", ctx.tmp / "new"]


# -- CLI and config -------------------------------------------------------------------


def _new_run(ctx, *extra):
    return [*RUN_ARGS, "--out", ctx.tmp / "new", *extra]


for _id, _extra, _names in [
    ("clients-0", ["--clients", "0"], ["split.clients"]),
    ("clients-minus-2", ["--clients", "-2"], ["split.clients"]),
    ("clients-50", ["--clients", "50"], ["split", "50 clients"]),
    ("folds-0", ["--folds", "0"], ["split.folds"]),
    ("folds-minus-1", ["--folds", "-1"], ["split.folds"]),
    ("n-values-20", ["--n-values", "20"], ["split", "N=20"]),
    ("lr-text", ["--set", "finetune.lr=fast"], ["finetune.lr"]),
    ("lr-negative", ["--set", "finetune.lr=-1"], ["finetune.lr"]),
    ("rounds-0", ["--set", "finetune.rounds=0"], ["finetune.rounds"]),
    ("size-0", ["--set", "data.preprocess.size=0"], ["data.preprocess.size"]),
    ("rounds-text-random", ["--set", "pretrain.rounds=abc"], ["pretrain.rounds"]),
    ("unknown-option", ["--set", "pretrain.roundz=2"], ["pretrain.roundz"]),
    ("scheme-bogus", ["--set", "split.scheme=bogus"], ["split.scheme"]),
    ("modes-bogus", ["--modes", "bogus"], ["finetune.modes"]),
    ("set-without-equals", ["--set", "finetune.lr"], ["finetune.lr"]),
    ("clients-not-a-number", ["--clients", "abc"], ["--clients"]),
    ("unknown-method", ["--methods", "nosuch"], ["nosuch"]),
    ("unknown-preset", ["--preset", "huge"], ["huge"]),
]:

    def _prepare(ctx, extra=_extra):
        return _new_run(ctx, *extra)

    CASES.append(Case(_id, "cli", _prepare, _names))


@case("yaml-tag-in-set", "cli", names=["pretrain.rounds"])
def _(ctx):
    ctx.marker = ctx.tmp / "code-ran"
    return _new_run(
        ctx, "--set", f'pretrain.rounds=!!python/object/apply:os.system ["touch {ctx.marker}"]'
    )


@case("device-cuda-without-gpu", "cli", names=["run.device"])
def _(ctx):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    return _new_run(ctx, "--device", "cuda")


@case("out-is-a-file", "cli", names=["{tmp}/afile", "--out"])
def _(ctx):
    (ctx.tmp / "afile").write_text("mine")
    return [*RUN_ARGS, "--out", ctx.tmp / "afile"]


@case("out-under-a-file", "cli", names=["{tmp}/afile/sub", "--out"])
def _(ctx):
    (ctx.tmp / "afile").write_text("mine")
    return [*RUN_ARGS, "--out", ctx.tmp / "afile" / "sub"]


@case("out-unwritable", "cli", names=["/proc/bench-run", "--out"])
def _(ctx):
    return [*RUN_ARGS, "--out", "/proc/bench-run"]


@case("fresh-on-a-user-folder", "cli", names=["{tmp}/precious", "not a bench run folder"])
def _(ctx):
    (ctx.tmp / "precious").mkdir()
    (ctx.tmp / "precious" / "thesis.tex").write_text("years of work")
    return [*RUN_ARGS, "--fresh", "--out", ctx.tmp / "precious"]


@case("fresh-with-clients-0", "cli", names=["split.clients"])
def _(ctx):
    (ctx.tmp / "precious").mkdir()
    (ctx.tmp / "precious" / "thesis.tex").write_text("years of work")
    return [*RUN_ARGS, "--fresh", "--clients", "0", "--out", ctx.tmp / "precious"]


# -- run folders: copies of the tiny run ----------------------------------------------


@case("pickle-in-server-final", "run", names=["final.pt", "unpickle"])
def _(ctx):
    work = ctx.run / "work" / "pretrain" / "simclr-seed0"
    ctx.pickle_bomb(work / "server" / "final.pt")
    for path in (ctx.run / "pretrained").glob("simclr-seed0*"):
        path.unlink()
    (ctx.run / "results" / f"{SIMCLR_UNIT}.csv").unlink()
    return ctx.run_args()


@case("pickle-in-server-round", "run", names=["round0001.pt", "unpickle"])
def _(ctx):
    work = ctx.run / "work" / "pretrain" / "simclr-seed0"
    (work / "server" / "final.pt").unlink()
    ctx.pickle_bomb(work / "server" / "round0001.pt")
    for path in (ctx.run / "pretrained").glob("simclr-seed0*"):
        path.unlink()
    (ctx.run / "results" / f"{SIMCLR_UNIT}.csv").unlink()
    return ctx.run_args()


@case("pickle-in-client-state", "run", names=["client000", "unpickle"])
def _(ctx):
    work = ctx.run / "work" / "pretrain" / "simclr-seed0"
    # Without the server's final state the closing exchange reads each client's last state.
    (work / "server" / "final.pt").unlink()
    ctx.pickle_bomb(work / "clients" / "client000" / "round0000.pt")
    for path in (ctx.run / "pretrained").glob("simclr-seed0*"):
        path.unlink()
    (ctx.run / "results" / f"{SIMCLR_UNIT}.csv").unlink()
    return ctx.run_args()


@case("pickle-in-from-run", "run", names=["{tmp}/source", "pretrained"])
def _(ctx):
    source = copy_run(ctx.tiny, ctx.tmp / "source")
    for path in (source / "pretrained").glob("simclr-seed0*"):
        if path.suffix in (".pt", ".safetensors"):
            ctx.pickle_bomb(path)
    return _new_run(ctx, "--set", f"pretrain.from_run={source}")


@case("from-run-not-a-run-folder", "run", names=["{tmp}/elsewhere"])
def _(ctx):
    (ctx.tmp / "elsewhere").mkdir()
    return _new_run(ctx, "--set", f"pretrain.from_run={ctx.tmp / 'elsewhere'}")


@case("truncated-unit-csv", "run", recover=[SIMCLR_UNIT])
def _(ctx):
    path = ctx.run / "results" / f"{SIMCLR_UNIT}.csv"
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.45)])
    return ctx.run_args()


@case("edited-unit-csv", "run", recover=[RANDOM_UNIT])
def _(ctx):
    path = ctx.run / "results" / f"{RANDOM_UNIT}.csv"
    lines = path.read_text().splitlines()
    fields = lines[1].split(",")
    fields[11] = "0.99"
    path.write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")
    return ctx.run_args()


@case("unit-without-manifest", "run", recover=[RANDOM_UNIT])
def _(ctx):
    (ctx.run / "results" / f"{RANDOM_UNIT}.manifest.json").unlink()
    return ctx.run_args()


@case("stray-csv-in-results", "run", names=["junk.csv"])
def _(ctx):
    (ctx.run / "results" / "junk.csv").write_text("a,b\n1,2\n")
    return ctx.run_args()


@case("config-yaml-garbage", "run", names=["config.yaml"])
def _(ctx):
    (ctx.run / "config.yaml").write_text("{{{ not yaml")
    return ctx.run_args()


@case("another-configuration", "run", names=["config.yaml", "another configuration"])
def _(ctx):
    return ctx.run_args("--set", "pretrain.lr=0.5")


@case("marker-removed-old-format", "run", names=["{run}", "older bench"])
def _(ctx):
    (ctx.run / ".bench-run").unlink()
    return ctx.run_args()


@case("marker-format-1", "run", names=["{run}", "format 1"])
def _(ctx):
    (ctx.run / ".bench-run").write_text(json.dumps({"format": 1}))
    return ctx.run_args()


@case("locked-by-a-live-run", "run", names=["{run}", f"PID {os.getppid()}"])
def _(ctx):
    holder = {"pid": os.getppid(), "host": os.uname().nodename}
    (ctx.run / ".bench-lock").write_text(json.dumps(holder))
    return ctx.run_args()


@case("stale-lock-taken-over", "run", ok=True)
def _(ctx):
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    holder = {"pid": process.pid, "host": os.uname().nodename}
    (ctx.run / ".bench-lock").write_text(json.dumps(holder))
    return ctx.run_args()


@case("latest-txt-garbage", "run", names=["latest.txt"])
def _(ctx):
    work = ctx.run / "work" / "pretrain" / "simclr-seed0"
    (work / "server" / "final.pt").unlink()
    (work / "server" / "latest.txt").write_text("abc")
    for path in (ctx.run / "pretrained").glob("simclr-seed0*"):
        path.unlink()
    (ctx.run / "results" / f"{SIMCLR_UNIT}.csv").unlink()
    return ctx.run_args()


@case("failures-json-garbage", "run", names=["failures.json"])
def _(ctx):
    work = ctx.run / "work" / "pretrain" / "simclr-seed0"
    (work / "server" / "final.pt").unlink()
    (work / "server" / "failures.json").write_text("[{")
    for path in (ctx.run / "pretrained").glob("simclr-seed0*"):
        path.unlink()
    (ctx.run / "results" / f"{SIMCLR_UNIT}.csv").unlink()
    return ctx.run_args()


# -- splits: the tiny run's split.json edited ----------------------------------------


def _edit_split(ctx, edit, *, rehash=True):
    from bench.datasets.splits import Split

    path = ctx.run / "split.json"
    saved = json.loads(path.read_text())
    split = Split.from_dict(saved)
    edit(split)
    document = split.to_dict()
    if rehash:
        document["hash"] = split.hash
    path.write_text(json.dumps(document, indent=1))
    return ctx.run_args()


def _test_patient(client) -> str:
    first = client.test[0]
    return first if isinstance(first, str) else first[0]


def _val_list(client) -> list:
    return client.val if isinstance(client.val, list) else client.val[1][0]


@case("split-without-hash", "split", names=["split.json", "hash"])
def _(ctx):
    def edit(split):
        split.clients[0].labeled[1][0] = [_test_patient(split.clients[0])]

    return _edit_split(ctx, edit, rehash=False)


@case("split-hash-mismatch", "split", names=["split.json", "hash"])
def _(ctx):
    path = ctx.run / "split.json"
    document = json.loads(path.read_text())
    document["params"]["seed"] = 99
    path.write_text(json.dumps(document))
    return ctx.run_args()


@case("split-test-patient-labeled", "split", names=["split.json", "leakage"])
def _(ctx):
    def edit(split):
        split.clients[0].labeled[1][0] = [_test_patient(split.clients[0])]

    return _edit_split(ctx, edit)


@case("split-test-patient-in-val", "split", names=["split.json", "leakage"])
def _(ctx):
    return _edit_split(ctx, lambda s: _val_list(s.clients[0]).append(_test_patient(s.clients[0])))


@case("split-patient-on-two-clients", "split", names=["split.json", "two clients"])
def _(ctx):
    return _edit_split(ctx, lambda s: s.clients[1].pretrain.append(s.clients[0].pretrain[0]))


@case("split-unknown-labeled-patient", "split", names=["split.json", "patient999"])
def _(ctx):
    def edit(split):
        split.clients[0].labeled[1][0] = ["patient999"]

    return _edit_split(ctx, edit)


@case("split-unknown-pretrain-patient", "split", names=["split.json", "ghost"])
def _(ctx):
    return _edit_split(ctx, lambda s: s.clients[1].pretrain.append("ghost"))


@case("split-test-in-pretraining", "split", names=["split.json", "pretraining pool"])
def _(ctx):
    return _edit_split(ctx, lambda s: s.clients[0].pretrain.append(_test_patient(s.clients[0])))


@case("split-not-json", "split", names=["split.json"])
def _(ctx):
    (ctx.run / "split.json").write_text("{ not json")
    return ctx.run_args()


@case("split-a-list", "split", names=["split.json"])
def _(ctx):
    (ctx.run / "split.json").write_text("[1, 2, 3]")
    return ctx.run_args()


@case("split-lacks-configured-n", "split", names=["split.json", "N=1"])
def _(ctx):
    def edit(split):
        for client in split.clients:
            client.labeled[3] = client.labeled.pop(1)

    return _edit_split(ctx, edit)


@case("split-no-clients", "split", names=["split.json", "no clients"])
def _(ctx):
    return _edit_split(ctx, lambda s: s.clients.clear())


@case("split-hash-a-number", "split", names=["split.json", "hash"])
def _(ctx):
    path = ctx.run / "split.json"
    document = json.loads(path.read_text())
    document["hash"] = 7451316007e79
    path.write_text(json.dumps(document))
    return ctx.run_args()


# -- reports: `bench report` on copies of the tiny run --------------------------------


def _rehash(ctx, unit: str, text: str) -> None:
    """Rewrites a unit CSV and its manifest so that the manifest matches the new bytes."""
    csv = ctx.run / "results" / f"{unit}.csv"
    csv.write_text(text)
    manifest_path = ctx.run / "results" / f"{unit}.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = hashlib.sha256(csv.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))


def _unit_text(ctx, unit=RANDOM_UNIT) -> str:
    return (ctx.run / "results" / f"{unit}.csv").read_text()


def _set_dice(text: str, value: str) -> str:
    lines = text.splitlines()
    fields = lines[1].split(",")
    fields[lines[0].split(",").index("dice")] = value
    return "\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n"


@case("report-truncated-unit", "report", names=[RANDOM_UNIT, "SHA-256"])
def _(ctx):
    path = ctx.run / "results" / f"{RANDOM_UNIT}.csv"
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.45)])
    return ctx.report_args()


@case("report-dice-5", "report", names=[RANDOM_UNIT, "outside [0, 1]"])
def _(ctx):
    _rehash(ctx, RANDOM_UNIT, _set_dice(_unit_text(ctx), "5.0"))
    return ctx.report_args()


@case("report-dice-abc", "report", names=[RANDOM_UNIT, "not a number"])
def _(ctx):
    _rehash(ctx, RANDOM_UNIT, _set_dice(_unit_text(ctx), "abc"))
    return ctx.report_args()


@case("report-duplicated-rows", "report", names=[RANDOM_UNIT, "share a key"])
def _(ctx):
    text = _unit_text(ctx)
    _rehash(ctx, RANDOM_UNIT, text + text.splitlines()[1] + "\n")
    return ctx.report_args()


@case("report-missing-column", "report", names=[RANDOM_UNIT, "dice"])
def _(ctx):
    _rehash(ctx, RANDOM_UNIT, _unit_text(ctx).replace(",dice,", ",dise,", 1))
    return ctx.report_args()


@case("report-empty-csv", "report", names=[RANDOM_UNIT])
def _(ctx):
    _rehash(ctx, RANDOM_UNIT, "")
    return ctx.report_args()


@case("report-binary-csv", "report", names=[RANDOM_UNIT])
def _(ctx):
    path = ctx.run / "results" / f"{RANDOM_UNIT}.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 50)
    return ctx.report_args()


@case("report-manifest-garbage", "report", names=[RANDOM_UNIT, "manifest"])
def _(ctx):
    (ctx.run / "results" / f"{RANDOM_UNIT}.manifest.json").write_text("{oops")
    return ctx.report_args()


@case("report-manifest-missing", "report", names=[RANDOM_UNIT, "manifest"])
def _(ctx):
    (ctx.run / "results" / f"{RANDOM_UNIT}.manifest.json").unlink()
    return ctx.report_args()


@case("report-rows-of-another-split", "report", names=[RANDOM_UNIT, "split"])
def _(ctx):
    text = _unit_text(ctx)
    old = json.loads((ctx.run / "results" / f"{RANDOM_UNIT}.manifest.json").read_text())
    new = "7451316007e79229"
    _rehash(ctx, RANDOM_UNIT, text.replace(old["split_hash"], new))
    manifest_path = ctx.run / "results" / f"{RANDOM_UNIT}.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["split_hash"] = new
    manifest_path.write_text(json.dumps(manifest))
    return ctx.report_args()


@case("report-run-yaml-garbage", "report", names=["run.yaml"])
def _(ctx):
    (ctx.run / "run.yaml").write_text("{{{ not yaml")
    return ctx.report_args()


@case("report-config-yaml-garbage", "report", names=["config.yaml"])
def _(ctx):
    (ctx.run / "config.yaml").write_text(": : :\n- [")
    return ctx.report_args()


@case("report-out-is-a-file", "report", names=["{tmp}/afile", "--out"])
def _(ctx):
    (ctx.tmp / "afile").write_text("mine")
    return ["report", ctx.run, "--out", ctx.tmp / "afile", "--no-qualitative", "--quiet"]


@case("report-out-under-a-file", "report", names=["{tmp}/afile/sub", "--out"])
def _(ctx):
    (ctx.tmp / "afile").write_text("mine")
    return ["report", ctx.run, "--out", ctx.tmp / "afile" / "sub", "--no-qualitative", "--quiet"]


@case("report-no-such-folder", "report", names=["{tmp}/nowhere"])
def _(ctx):
    return ["report", ctx.tmp / "nowhere", "--out", ctx.tmp / "report", "--quiet"]


@case("report-not-a-run-folder", "report", names=["{tmp}/elsewhere"])
def _(ctx):
    (ctx.tmp / "elsewhere").mkdir()
    return ["report", ctx.tmp / "elsewhere", "--out", ctx.tmp / "report", "--quiet"]


@case("report-pickle-in-model", "report", names=["models", "unpickle"])
def _(ctx):
    for path in (ctx.run / "models").iterdir():
        ctx.pickle_bomb(path)
    return ["report", ctx.run, "--out", ctx.tmp / "report", "--quiet"]


@case("report-stray-unit-without-manifest", "report", names=["junk.csv"])
def _(ctx):
    (ctx.run / "results" / "junk.csv").write_text(_unit_text(ctx))
    return ctx.report_args()


# ------------------------------------------------------------------------- the test


def _filled(text: str, ctx: Ctx) -> str:
    return text.format(run=ctx.tmp / "run", data=ctx.tmp / "data", tmp=ctx.tmp)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_named_and_loses_nothing(case, tiny_run, tmp_path):
    ctx = Ctx(tiny_run, tmp_path)
    argv = case.prepare(ctx)
    results = (ctx._run or tmp_path / "run") / "results"
    before = file_hashes(results)
    precious = file_hashes(tmp_path / "precious")
    code, _, err = bench(argv)
    assert "Traceback" not in err, err[-3000:]
    if ctx.marker is not None:
        assert not ctx.marker.exists(), "code from a file ran"
    assert file_hashes(tmp_path / "precious") == precious, "a user's folder was changed"
    if case.ok or case.recover:
        assert code == 0, err[-3000:]
        for name in case.names:
            assert _filled(name, ctx) in err, err[-3000:]
        after = file_hashes(results)
        for unit in case.recover:
            assert f"recomputing {results / unit}.csv" in err
            assert (results / f"{unit}.csv").read_bytes() == (
                tiny_run / "results" / f"{unit}.csv"
            ).read_bytes()
        untouched = {k: v for k, v in before.items() if not any(u in k for u in case.recover)}
        assert {k: after[k] for k in untouched} == untouched
        return
    errors = [line for line in err.splitlines() if line.startswith("bench")]
    assert code == 2, err[-3000:]
    assert len(errors) == 1 and errors[0].startswith("bench: error: "), err[-3000:]
    for name in case.names:
        assert _filled(name, ctx) in errors[0], errors[0]
    assert file_hashes(results) == before, "results/ changed"


def test_the_corpus_covers_every_kind():
    kinds = [c.kind for c in CASES]
    assert len(CASES) >= 80
    assert all(kinds.count(k) >= 10 for k in ("data", "cli", "run", "split", "report")), kinds


def test_a_pickle_bomb_really_runs_code_when_unpickled_unsafely(tmp_path):
    """The corpus' crafted files are live: loading one without weights_only runs it."""
    marker = tmp_path / "ran"
    buffer = io.BytesIO()
    torch.save({"state": _Payload(marker)}, buffer)
    torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    assert marker.exists()


def test_the_raw_header_helper_makes_a_valid_nifti():
    raw = _raw_header((2, 3, 4)) + struct.pack("<24h", *range(24))
    image = nib.Nifti1Image.from_bytes(raw)
    assert image.shape == (2, 3, 4)
