"""`ezrec mark`, `ezrec share ID` / `ezrec share revoke ID`, `ezrec show ID --qr`: one-line
errors, and a terminal QR code that decodes back to the share link."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zxingcpp
from click.testing import CliRunner
from PIL import Image

from controller.cli import main
from controller.config import load_settings
from controller.context import open_context
from tests.test_share import uploaded_booking

TEMPLATE = "https://watch.example/v/{booking}/{clip}?t={token}"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EZREC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EZREC_DEVICE_ID", "court1")
    monkeypatch.setenv("EZREC_SHARE_URL_TEMPLATE", TEMPLATE)
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True) -> tuple[int, str, str]:
        result = runner.invoke(main, list(args), catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output + result.stderr
        return result.exit_code, result.stdout, result.stderr

    return invoke


def terminal_qr_text(text: str) -> str:
    """Read the block characters back into pixels (a block is a light module) and decode."""
    rows: list[list[int]] = []
    for line in text.splitlines():
        if not line or line[0] not in "█▀▄ ":
            continue
        top = [255 if ch in "█▀" else 0 for ch in line]
        bottom = [255 if ch in "█▄" else 0 for ch in line]
        rows += [top, bottom]
    width = max(len(r) for r in rows)
    img = Image.new("L", (width, len(rows)), 255)
    for y, row in enumerate(rows):
        for x, value in enumerate(row):
            img.putpixel((x, y), value)
    img = img.resize((width * 8, len(rows) * 8), Image.Resampling.NEAREST)
    found = zxingcpp.read_barcodes(img)
    assert found, "no QR code in the terminal output"
    return str(found[0].text)


def test_mark_from_the_cli_and_its_one_line_refusals(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC).replace(microsecond=0)
    ctx = open_context(load_settings(data_dir=tmp_path, device_id="court1"))
    ctx.store.create(now - timedelta(minutes=1), now + timedelta(minutes=30), booking_id="b1")
    ctx.store.fire("b1", "start")
    ctx.close()
    _, out, _ = run("mark")
    assert out.startswith("marked b1 at") and "s in" in out
    _, out, _ = run("mark", "--at", "-1s")
    assert "counted once" in out
    _, out, _ = run("mark", "--booking", "b1", "--at", "-30s", "--json")
    assert json.loads(out)["mark"]["source"] == "cli"
    code, _, err = run("mark", "--at", "-5m", ok=False)
    assert code == 1 and err.startswith("error: no booking is recording on camera 'court1'")
    code, _, err = run("mark", "--booking", "b1", "--at", "-5m", ok=False)
    assert code == 1 and "is before booking b1 started" in err and len(err.splitlines()) == 1
    code, _, err = run("mark", "--at", "yesterday", ok=False)
    assert code == 1 and "is not an ISO 8601 time" in err
    _, out, _ = run("show", "b1")
    assert "marks" in out and "(cli)" in out
    _, out, _ = run("show", "b1", "--json")
    assert len(json.loads(out)["marks"]) == 2
    code, _, err = run("show", "b1", "--qr", ok=False)
    assert code == 1 and err.startswith("error: booking b1 has no share link")


def test_share_show_qr_and_revoke(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(data_dir=tmp_path, device_id="court1", share_url_template=TEMPLATE)
    ctx = open_context(settings)
    uploaded_booking(ctx, settings)
    ctx.close()
    _, out, _ = run("share", "bk1")
    assert "clip01" in out and "https://watch.example/v/bk1/?t=" in out
    _, out, _ = run("share", "bk1", "--json")
    link = next(i["url"] for i in json.loads(out)["links"] if i["name"] == "video")
    _, out, _ = run("show", "bk1", "--qr")
    assert "clip01" in out and link in out
    assert terminal_qr_text(out) == link
    _, out, _ = run("share", "revoke", "bk1")
    assert "revoked" in out
    code, _, err = run("share", "revoke", "bk1", ok=False)
    assert code == 1 and "no share links to revoke" in err
    code, _, err = run("share", "a", "b", "c", ok=False)
    assert code == 2 and "ezrec share revoke ID" in err
    code, _, err = run("share", "nope", ok=False)
    assert code == 1 and "no booking 'nope'" in err


def test_add_takes_the_players_email_and_refuses_a_bad_one(run) -> None:  # type: ignore[no-untyped-def]
    _, out, _ = run("add", "--start", "+1h", "--end", "+2h", "--id", "b9",
                    "--email", "player@example.com", "--json")  # fmt: skip
    assert json.loads(out)["extra"]["contact_email"] == "player@example.com"
    code, _, err = run("add", "--start", "+3h", "--end", "+4h", "--email", "a@b@c", ok=False)
    assert code == 1
    assert err == "error: contact_email must be one address such as player@example.com\n"
