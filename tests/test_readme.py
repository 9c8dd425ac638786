"""The README is part of the contract: every setting is in its one settings table."""

from pathlib import Path

from app.core.config import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def _settings_table() -> str:
    text = README.read_text()
    return text[text.index("\n## Settings\n") : text.index("\n## Command line\n")]


def test_every_setting_is_in_the_readme_settings_table() -> None:
    table = _settings_table()
    missing = [
        f"REFERRAL_{name.upper()}"
        for name in Settings.model_fields
        if f"`REFERRAL_{name.upper()}`" not in table
    ]
    assert missing == [], f"document these settings in README.md's settings table: {missing}"


def test_the_table_names_no_setting_that_does_not_exist() -> None:
    known = {f"REFERRAL_{name.upper()}" for name in Settings.model_fields}
    known |= {"REFERRAL_TEST_DATABASE_URL", "REFERRAL_TEST_REQUIRE_POSTGRES"}  # tests only
    documented = {
        cell.strip("`")
        for line in _settings_table().splitlines()
        if line.startswith("| `REFERRAL_")
        for cell in line.split("|")[1].strip().split(" / ")
    }
    assert documented - known == set()
