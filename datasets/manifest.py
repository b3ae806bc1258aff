"""Federation manifests: what each site holds (patient ids, groups, content hashes; no images).

A site publishes its part (``site_manifest``): one entry per patient of its data
folder with the sha256 of the patient's files. The operator joins the parts, in
partition order, into the federation manifest; the split is made from it
(``manifest_records`` -> ``make_split(..., sites=...)``) and records its hash, so the
split's hash covers the manifest. Before training a site checks that its folder
still matches its part (``check_site_folder``): a site whose data changed since
enrollment is refused. Format: docs/FORMATS.md, "Federation manifest".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from bench.io import atomic_write_text, read_json_object

from .errors import DataError
from .layout import read_dataset
from .records import PatientRecord

SITE_FORMAT = "bench-site-manifest/1"
FEDERATION_FORMAT = "bench-federation-manifest/1"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def patient_files(record: PatientRecord) -> list[Path]:
    """Every file a patient's volumes are read from (frames, labels, cine)."""
    files = [f.image_path for f in record.frames]
    files += [f.label_path for f in record.frames if f.label_path is not None]
    if record.cine_path is not None:
        files.append(record.cine_path)
    return sorted(set(files), key=lambda p: p.name)


def patient_hash(record: PatientRecord) -> str:
    """sha256 over the patient's files (name and content hash of each, sorted by name)."""
    lines = [f"{path.name} {_file_sha256(path)}" for path in patient_files(record)]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def patient_entry(record: PatientRecord) -> dict:
    return {
        "id": record.patient_id,
        "subset": record.subset,
        "group": record.group,
        "labeled": record.labeled,
        "sha256": patient_hash(record),
    }


def site_manifest(root: Path, site: str) -> dict:
    """A site's part: its folder's layout and one entry per patient (read, hashed, no image)."""
    layout, records = read_dataset(root)
    return {
        "format": SITE_FORMAT,
        "site": site,
        "layout": layout,
        "patients": [patient_entry(r) for r in sorted(records, key=lambda r: r.patient_id)],
    }


def canonical_hash(document: dict) -> str:
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_site_part(part: dict, where: Path) -> None:
    if part.get("format") != SITE_FORMAT:
        raise DataError(where, f"not a site manifest (format {part.get('format')!r})")
    try:
        ids = [p["id"] for p in part["patients"]]
        for p in part["patients"]:
            if not isinstance(p["sha256"], str) or not isinstance(p["labeled"], bool):
                raise TypeError
        str(part["site"]), str(part["layout"])
    except (KeyError, TypeError):
        raise DataError(where, "site manifest lacks site, layout or patient fields") from None
    if len(set(ids)) != len(ids):
        raise DataError(where, f"site {part['site']!r} lists a patient twice")


def read_site_manifest(path: Path) -> dict:
    part = read_json_object(path, "manifest")
    _check_site_part(part, Path(path))
    return part


def write_manifest(path: Path, document: dict) -> Path:
    atomic_write_text(path, json.dumps(document, indent=1, sort_keys=True) + "\n")
    return Path(path)


@dataclass(frozen=True)
class FederationManifest:
    """The sites' parts in partition order: site ``k`` is client ``k`` of the split."""

    sites: list[dict]

    @classmethod
    def join(cls, parts: list[dict]) -> FederationManifest:
        names = [part["site"] for part in parts]
        if len(set(names)) != len(names):
            raise DataError(Path("."), f"two site manifests name the same site ({names})")
        owner: dict[str, str] = {}
        for part in parts:
            for patient in part["patients"]:
                other = owner.setdefault(patient["id"], part["site"])
                if other != part["site"]:
                    raise DataError(
                        Path("."),
                        f"patient {patient['id']!r} is listed by sites {other!r} and "
                        f"{part['site']!r}; patient ids must be unique across the federation",
                    )
        layouts = sorted({part["layout"] for part in parts})
        if len(layouts) > 1:
            raise DataError(Path("."), f"sites hold different layouts ({', '.join(layouts)})")
        return cls(list(parts))

    def to_dict(self) -> dict:
        return {"format": FEDERATION_FORMAT, "sites": self.sites}

    @property
    def hash(self) -> str:
        return canonical_hash(self.to_dict())

    @property
    def layout(self) -> str:
        return self.sites[0]["layout"]

    def part(self, site: int) -> dict:
        return self.sites[site]

    def save(self, path: Path) -> Path:
        return write_manifest(path, {**self.to_dict(), "hash": self.hash})

    @classmethod
    def from_dict(cls, document: dict, where: Path) -> FederationManifest:
        if document.get("format") != FEDERATION_FORMAT or not isinstance(
            document.get("sites"), list
        ):
            raise DataError(where, f"not a federation manifest (format {document.get('format')!r})")
        if not document["sites"]:
            raise DataError(where, "the federation manifest has no sites")
        for part in document["sites"]:
            _check_site_part(part, where)
        manifest = cls.join(document["sites"])
        if "hash" in document and document["hash"] != manifest.hash:
            raise DataError(
                where,
                f"manifest hash {document['hash']} does not match its content ({manifest.hash}); "
                "was the file edited?",
            )
        return manifest

    @classmethod
    def load(cls, path: Path) -> FederationManifest:
        return cls.from_dict(read_json_object(path, "manifest"), Path(path))


@dataclass(frozen=True)
class ManifestRecord:
    """What the split needs of a patient, read from the manifest: no file, no image."""

    patient_id: str
    subset: str
    group: str | None
    labeled: bool
    layout: str
    site: int


def manifest_records(manifest: FederationManifest) -> list[ManifestRecord]:
    return [
        ManifestRecord(p["id"], p["subset"], p["group"], p["labeled"], part["layout"], site)
        for site, part in enumerate(manifest.sites)
        for p in part["patients"]
    ]


def check_site_folder(root: Path, part: dict) -> list[PatientRecord]:
    """The folder's records when it holds exactly the patients of ``part``, unchanged.

    DataError (one line, naming the folder) when a patient was added, removed or its
    files changed since the site published its part (enrollment).
    """
    root = Path(root)
    layout, records = read_dataset(root)
    changed = f"changed since enrollment (site {part['site']!r})"
    if layout != part["layout"]:
        raise DataError(root, f"{changed}: it holds {layout} data, the manifest {part['layout']}")
    listed = {p["id"]: p for p in part["patients"]}
    held = {r.patient_id: r for r in records}
    extra = sorted(set(held) - set(listed))
    if extra:
        raise DataError(root, f"{changed}: patient {extra[0]!r} is not in the manifest")
    missing = sorted(set(listed) - set(held))
    if missing:
        raise DataError(root, f"{changed}: manifest patient {missing[0]!r} is missing")
    for patient_id in sorted(held):
        entry, record = listed[patient_id], held[patient_id]
        if patient_hash(record) != entry["sha256"]:
            raise DataError(
                root, f"{changed}: the files of patient {patient_id!r} differ from the manifest"
            )
        if record.labeled != entry["labeled"] or record.group != entry["group"]:
            raise DataError(root, f"{changed}: patient {patient_id!r}'s labels or group differ")
    return records
