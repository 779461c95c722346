"""What ``pip install`` gives: a wheel with the sample catalog and configuration inside, ``billing init --example
DIR`` writing them, an installed ``billing`` that works outside the repository, and the license declared and
shipped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

import billing
from billing.cli import app
from billing.cli.examples import EXAMPLE_FILES, example_text
from billing.config import get_settings

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGES = ("pricing_plans", "meters", "invoices", "dbkit", "billing")


def test_the_packaged_examples_are_the_repositorys_sample_files():
    for name in EXAMPLE_FILES:
        assert example_text(name) == (ROOT / name).read_text(encoding="utf-8"), (
            f"billing/examples/{name} and ./{name} differ: edit both"
        )


def test_the_license_file_is_the_declared_license_in_full():
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text and "9. Accepting Warranty or Additional Liability." in text
    assert len(text.splitlines()) == 202
    assert "Programming Language :: Python :: 3.12" in project["classifiers"]


@pytest.fixture
def no_billing_environment(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("BILLING_") and key != "BILLING_TEST_DATABASE_URL":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_init_example_writes_the_samples_and_creates_the_database_they_name(no_billing_environment):
    tmp_path = no_billing_environment
    runner = CliRunner()
    result = runner.invoke(app, ["init", "--example", "demo"])
    assert result.exit_code == 0, result.output
    demo = (tmp_path / "demo").resolve()
    for name in EXAMPLE_FILES:
        assert (demo / name).read_text(encoding="utf-8") == (ROOT / name).read_text(encoding="utf-8")
    assert f"database sqlite:///{demo / 'billing.db'} at revision" in result.stdout.replace("\n", "")
    assert (demo / "billing.db").is_file() and "BILLING_CONFIG" not in os.environ

    # a second time the files are there: refused, nothing changed, unless --force
    (demo / "catalog.toml").write_text("# mine\n", encoding="utf-8")
    again = runner.invoke(app, ["init", "--example", "demo"])
    assert again.exit_code == 1
    assert f"{Path('demo') / 'catalog.toml'} and {Path('demo') / 'config.toml'} already exist" in again.output
    assert (demo / "catalog.toml").read_text(encoding="utf-8") == "# mine\n"
    forced = runner.invoke(app, ["init", "--example", "demo", "--force"])
    assert forced.exit_code == 0, forced.output
    assert (demo / "catalog.toml").read_text(encoding="utf-8") == (ROOT / "catalog.toml").read_text(encoding="utf-8")


def _copy_sources(target: Path) -> None:
    """The files a wheel is built from, without caches, databases or the virtual environment."""
    target.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, target / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__", "*.db*"))


@pytest.mark.slow
def test_an_installed_wheel_gives_a_working_billing_outside_the_repository(tmp_path):
    """Build the wheel without a network, install it alone into a fresh virtual environment that sees this
    environment's dependencies (but not the repository), and start a project with it."""
    sources = tmp_path / "src"
    _copy_sources(sources)
    # nothing from the repository on the path (PYTHONPATH, or the working directory of `python -m`): pip would
    # take its metadata for an installed billing-engine
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLING_", "PYTHON"))}
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp_path / "dist"), str(sources)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert wheel.name == f"billing_engine-{billing.__version__}-py3-none-any.whl"
    # the invoice documents' template and catalogs, compiled when first used (nothing compiled is shipped)
    names = set(zipfile.ZipFile(wheel).namelist())
    for language in ("de", "fr", "es", "ru", "ja"):
        assert f"invoices/locale/{language}/LC_MESSAGES/invoices.po" in names, language
    assert {"invoices/templates/invoice.html.j2", "invoices/templates/invoice.css"} <= names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120, env=env)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True, env=env,
        ).stdout.strip()
    )  # fmt: skip
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert installed.returncode == 0 and "Successfully installed billing-engine" in installed.stdout, installed
    # then the dependencies from this environment, after the venv's own packages and as a plain path entry: its
    # .pth files (among them an editable install of the repository) are not read from there
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")

    work = tmp_path / "work"
    work.mkdir()
    billing_command = venv / "bin" / "billing"

    def run(*args: str, cwd: Path = work) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(billing_command), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
        )

    where = subprocess.run(
        [python, "-c", "import billing; print(billing.__file__)"], capture_output=True, text=True, cwd=work, env=env
    )
    assert where.stdout.strip().startswith(str(site)), where
    assert run("--version").stdout == f"billing {billing.__version__}\n"
    started = run("init", "--example", "acme")
    assert started.returncode == 0, started.stderr
    assert f"database sqlite:///{work / 'acme' / 'billing.db'} at revision" in started.stdout.replace("\n", "")
    validated = run("plans", "validate", cwd=work / "acme")
    assert validated.returncode == 0, validated.stderr
    assert "catalog.toml: OK — 13 meters, 13 plans" in " ".join(validated.stdout.split())
    from_elsewhere = run("--config", "acme/config.toml", "plans", "show", "api_growth")
    assert from_elsewhere.returncode == 0 and "API Growth" in from_elsewhere.stdout, from_elsewhere.stderr
