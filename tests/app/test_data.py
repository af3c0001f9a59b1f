"""`recsys data prepare` / `recsys data synth`: arguments -> typed configs -> the pipelines."""

from __future__ import annotations

import argparse

import pytest

from app.data import register
from recsys.dataset import load_dataset
from recsys.errors import UserError


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="recsys")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def write(tmp_path):
    """write(name, text) -> path of a new file under tmp_path."""

    def _write(name: str, content: str):
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        return path

    return _write


def test_cli_prepare_and_synth(write, tmp_path, capsys):
    path = write("log.csv", "who;what;when\nu1;a;5\nu1;b;4\nu2;a;1\n")
    argv = ["data", "prepare", "--format", "csv", "--input", str(path), "--out",
            str(tmp_path / "ds"), "--user-col", "who", "--item-col", "what", "--time-col", "when",
            "--separator", ";", "--quiet"]  # fmt: skip
    assert run_cli(argv) == 0
    assert "2 users, 2 items, 3 interactions" in capsys.readouterr().out
    data = load_dataset(tmp_path / "ds")
    assert data.user_keys.tolist() == ["u1", "u2"] and data.sequence(0).tolist() == [2, 1]
    synth = [
        "data",
        "synth",
        "--out",
        str(tmp_path / "syn"),
        "--users",
        "50",
        "--items",
        "30",
        "--seed",
        "1",
        "--quiet",
    ]
    assert run_cli(synth) == 0
    assert load_dataset(tmp_path / "syn").num_users == 50
    raw = [
        "data",
        "synth",
        "--out",
        str(tmp_path / "raw.csv"),
        "--users",
        "20",
        "--events",
        "200",
        "--format",
        "csv",
        "--quiet",
    ]
    assert run_cli(raw) == 0
    assert (tmp_path / "raw.csv").read_text().startswith("user_id,item_id,timestamp\n")


def test_cli_turns_bad_arguments_into_user_errors(tmp_path):
    with pytest.raises(UserError, match="kcore must be >= 0"):
        run_cli(
            [
                "data",
                "prepare",
                "--format",
                "csv",
                "--input",
                "x",
                "--out",
                str(tmp_path),
                "--kcore",
                "-1",
            ]
        )
    with pytest.raises(UserError, match="num_users must be >= 1"):
        run_cli(["data", "synth", "--out", str(tmp_path / "s"), "--users", "0"])
