"""The README documents every endpoint, errno, setting and metric the daemon has."""

from __future__ import annotations

import re
from pathlib import Path

from dealer.app import build_api
from dealer.errors import Errors
from dealer.metrics import Metrics
from dealer.settings import Settings

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


def test_readme_starts_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    assert "make run" in first_block
    assert "make test" in first_block


def test_every_endpoint_is_in_the_readme() -> None:
    for endpoint in build_api().endpoints:
        last = endpoint.path.rsplit("/", 1)[-1]
        assert endpoint.path in README or f"`{last}`" in README, endpoint.path


def test_every_errno_is_in_the_readme() -> None:
    for code in Errors.all():
        assert re.search(rf"\| {code.errno} \| {code.status} \| {code.code}", README), code


def test_every_setting_is_in_the_readme() -> None:
    for name in Settings.model_fields:
        assert f"DEALER_{name.upper()}" in README, name


def test_every_metric_is_in_the_readme() -> None:
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in README, name
