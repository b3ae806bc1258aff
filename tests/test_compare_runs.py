"""scripts/compare_runs.py: every digit of the shared columns; added columns listed, not
compared."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "compare_runs", Path(__file__).resolve().parent.parent / "scripts" / "compare_runs.py"
)
compare_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_runs)


def write(run: Path, text: str) -> Path:
    (run / "results").mkdir(parents=True)
    (run / "results" / "unit.csv").write_text(text)
    return run


def test_last_digit_counts_and_added_columns_are_listed(tmp_path, capsys):
    before = write(tmp_path / "a", "method,dice,code_version\nfcl,0.123456,v1\n")
    same = write(tmp_path / "b", "method,grid,dice,code_version\nfcl,native,0.123456,v2\n")
    moved = write(tmp_path / "c", "method,dice,code_version\nfcl,0.123457,v1\n")
    assert compare_runs.main([str(before), str(same)]) == 0
    out = capsys.readouterr().out
    assert "identical" in out and "(not compared): grid" in out
    assert compare_runs.main([str(before), str(moved)]) == 1
    assert "row 1, dice: 0.123456 vs 0.123457" in capsys.readouterr().out
