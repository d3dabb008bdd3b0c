"""bench/time_to_video.py's arguments and table (the benchmark itself is not run here)."""

from __future__ import annotations

import pytest

from bench._table import emit
from bench.time_to_video import HEADERS, parse_args, table_rows


def test_cases_from_the_arguments() -> None:
    assert parse_args([]).cases == [None, 8.0]
    assert parse_args(["--both", "--uplink-mbit", "4"]).cases == [None, 4.0]
    assert parse_args(["--uplink-mbit", "8"]).cases == [8.0]
    assert parse_args(["--loopback"]).cases == [None]
    args = parse_args(["--lengths", "10,20", "--env", "EZREC_CHUNK_S=5", "--env", "A=b=c"])
    assert args.lengths == [10, 20]
    assert args.env == {"EZREC_CHUNK_S": "5", "A": "b=c"}


@pytest.mark.parametrize("bad", [["--lengths", "x"], ["--lengths", "0"], ["--env", "NOEQUALS"],
                                 ["--loopback", "--uplink-mbit", "8"], ["--uplink-mbit", "0"],
                                 ["--onepass-runs", "0"]])
def test_bad_arguments_are_refused(bad: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(bad)


def test_table_rows(capsys: pytest.CaptureFixture[str]) -> None:
    rows = table_rows([
        {"uplink": "loopback", "length_s": 20, "end_to_completed_s": 0.03,
         "end_to_processed_s": 9.5, "end_to_uploaded_s": 9.6, "video_bytes": 6 * 2**20,
         "build_cpu_s": None, "onepass_cpu_s": 16.0, "cpu_ratio": None, "chunked_cpu_s": 15.5},
        {"uplink": "8 Mbit/s", "length_s": 120, "end_to_completed_s": 0.03,
         "end_to_processed_s": 9.0, "end_to_uploaded_s": 9.9, "video_bytes": None,
         "build_cpu_s": 18.0, "onepass_cpu_s": 16.0, "cpu_ratio": 1.125},
    ])  # fmt: skip
    assert rows[0] == ("loopback", "20 s", "0.03 s", "9.5 s", "9.6 s", "6.0 MiB", "n/a",
                       "16.0 s", "n/a", "15.5 s", "yes")  # fmt: skip
    assert rows[1][-3:] == ("1.12", "n/a", "NO")  # uploaded in time, but the CPU ratio is over 1.10
    assert rows[-1][0] == "goal" and len(rows[-1]) == len(HEADERS)
    emit("t", rows, {}, None, headers=HEADERS)
    assert "end->uploaded" in capsys.readouterr().out
