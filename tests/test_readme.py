"""The README's Python snippet runs as written (after the quick start's `trexsim init my-study`)."""

import re
from pathlib import Path

from typer.testing import CliRunner

from trexsim.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_snippet_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    snippet = next(b for b in blocks if "load_config" in b)
    assert "my-study/community.json" in snippet
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["init", "my-study"]).exit_code == 0
    exec(compile(snippet, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert "Wh traded in the market" in printed and "bill_usd" in printed and "prosumer-1" in printed
    assert (tmp_path / "runs" / "py" / "report.html").exists()
