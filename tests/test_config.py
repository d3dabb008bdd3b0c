from __future__ import annotations

from pathlib import Path

import pytest

from controller.config import ConfigError, load_settings


def test_defaults_derive_from_data_dir(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert s.db_url == f"sqlite:///{tmp_path / 'state.db'}"
    assert s.storage_url == f"file://{tmp_path / 'uploads'}"
    assert s.layout == "side_by_side" and s.cameras == 2 and s.camera_driver == "auto"


def test_toml_then_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "ezrec.toml"
    cfg.write_text('fps = 25\nlayout = "stacked"\nEZREC_CAMERAS = 1\nrotation = [180]\n')
    s = load_settings(cfg, data_dir=tmp_path)
    assert (s.fps, s.layout, s.cameras, s.rotation) == (25, "stacked", 1, [180])
    monkeypatch.setenv("EZREC_FPS", "15")
    monkeypatch.setenv("EZREC_CONFIG", str(cfg))
    s = load_settings(data_dir=tmp_path)
    assert s.fps == 15 and s.layout == "stacked"


def test_env_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EZREC_ROTATION", "0, 270")
    monkeypatch.setenv("EZREC_SPONSOR_LOGOS", "a.png,https://x.example/b.png")
    s = load_settings(data_dir=tmp_path)
    assert s.rotation == [0, 270]
    assert s.sponsor_logos == ["a.png", "https://x.example/b.png"]
    assert s.rotation_for(1) == 270 and s.rotation_for(5) == 0


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("EZREC_FPS", "fast", "bad setting EZREC_FPS"),
        ("EZREC_LAYOUT", "diagonal", "bad setting EZREC_LAYOUT"),
        ("EZREC_ROTATION", "45", "45 is not one of"),
        ("EZREC_STORAGE_URL", "ftp://x", "bad setting EZREC_STORAGE_URL: must start with"),
        ("EZREC_CAMERAS", "9", "bad setting EZREC_CAMERAS"),
        ("EZREC_DEVICE_ID", "a b", "bad setting EZREC_DEVICE_ID"),
        ("EZREC_FRAMERATE", "30", "unknown setting EZREC_FRAMERATE"),
    ],
)
def test_bad_setting_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(data_dir=tmp_path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("fps = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg)
    cfg.write_text("colour = 'red'")
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_settings(cfg)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")


def test_secrets_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EZREC_API_TOKEN", "s3cret-token")
    s = load_settings(data_dir=tmp_path)
    assert "s3cret-token" not in repr(s)
    assert s.public_dict()["api_token"] == "***"
    assert s.api_token is not None and s.api_token.get_secret_value() == "s3cret-token"


def test_every_setting_is_documented_and_the_example_loads(tmp_path: Path) -> None:
    from controller.config import Settings

    docs = Path(__file__).parent.parent / "docs"
    guide = (docs / "operator-guide.md").read_text()
    for name in Settings.model_fields:
        assert f"`{name.upper()}`" in guide or f"`{name.upper()}," in guide or (
            f", `{name.upper()}`" in guide
        ), f"{name.upper()} is missing from docs/operator-guide.md"
    s = load_settings(docs / "ezrec.example.toml", data_dir=tmp_path)
    assert s.device_id == "court-1" and s.rotation == [0, 180]
