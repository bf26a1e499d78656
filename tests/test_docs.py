"""The documentation: the tutorial runs as written, and the site builds with no warning."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trexsim.cli import app

from conftest import CITYLEARN_DIR  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?:<!-- write: (?P<target>\S+) -->\n)?```(?P<lang>\w+)\n(?P<body>.*?)```", re.S)


def steps(page: Path):
    """The page's code blocks in order: (language, body, file to write or None)."""
    return [(m["lang"], m["body"], m["target"]) for m in BLOCK.finditer(page.read_text())]


@pytest.mark.skipif(not CITYLEARN_DIR.exists(), reason="the CityLearn 2022 data is not beside this checkout")
@pytest.mark.filterwarnings("ignore::trexsim.data.checks.ProfileWarning")  # the PV centroid of these data: see the page
def test_tutorial_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "citylearn-2022").symlink_to(CITYLEARN_DIR)
    namespace: dict = {"__name__": "tutorial"}
    ran = {"bash": 0, "python": 0, "json": 0}
    runner = CliRunner()
    for lang, body, target in steps(ROOT / "docs" / "tutorial.md"):
        if target is not None:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            Path(target).write_text(body)
        elif lang == "bash":
            for line in body.splitlines():
                words = shlex.split(line, comments=True)
                if not words:
                    continue
                assert words[0] == "trexsim", line
                r = runner.invoke(app, words[1:])
                assert r.exit_code == 0, f"{line}\n{r.output}"
        elif lang == "python":
            exec(compile(body, "docs/tutorial.md", "exec"), namespace)
        else:
            continue
        ran[lang] += 1
    assert ran == {"bash": 3, "python": 3, "json": 1}
    page = (tmp_path / "runs" / "homes-compare.html").read_text()
    assert "homes (average_price)" in page and "homes (exact_price)" in page
    assert (tmp_path / "runs" / "mine" / "report.html").exists()


def test_docs_site_builds_with_no_warning(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install '.[docs]')")
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed (pip install '.[docs]')")
    pytest.importorskip("material", reason="the docs extra is not installed (pip install '.[docs]')")
    mkdocs = [sys.executable, "-m", "mkdocs"]
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    r = subprocess.run([*mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    warnings = [line for line in (r.stdout + r.stderr).splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert warnings == []
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    assert "write_report" in reference and "load_config" in reference
    shutil.rmtree(tmp_path / "site")
