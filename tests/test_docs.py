"""Documentation stays true: every setting, CLI command and API route is documented."""

from __future__ import annotations

from pathlib import Path

import typer.main

from candor.app import create_app, route_table
from candor.cli import app as cli_app
from candor.config import Settings, settings_table

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for env, _field, _default in settings_table():
        assert f"`{env}`" in doc, f"{env} is not documented in docs/configuration.md"


def _commands(group: object, prefix: str = "") -> list[str]:
    out = []
    for name, cmd in getattr(group, "commands", {}).items():
        full = f"{prefix} {name}".strip()
        if hasattr(cmd, "commands"):
            out.extend(_commands(cmd, full))
        else:
            out.append(full)
    return out


def test_every_cli_command_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = _commands(typer.main.get_command(cli_app))
    assert "serve" in commands and "sources create" in commands
    for cmd in commands:
        assert f"candor {cmd}" in readme or f"`{cmd}" in readme, f"`candor {cmd}` is not documented in README.md"


def test_every_route_is_documented(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "api.md").read_text()
    app = create_app(Settings.from_env(env={}, data_dir=tmp_path))
    try:
        routes = route_table(app)
        assert any(r.path == "/v1/track" for r in routes)
        for route in routes:
            path, methods = route.path, route.methods
            if path in ("/docs/oauth2-redirect",):
                continue
            for method in methods - {"HEAD", "OPTIONS"}:
                assert f"`{method} {path}" in doc, f"{method} {path} is not documented in docs/api.md"
    finally:
        app.state.candor.close()


def test_security_doc_role_table_matches_code() -> None:
    from candor.auth import ROLES, SCOPES

    doc = (ROOT / "docs" / "security.md").read_text()
    header = "| scope | meaning | " + " | ".join(ROLES) + " |"
    assert header in doc, "the role table in docs/security.md must list the roles in code order"
    for scope, meaning in SCOPES.items():
        row = f"| `{scope}` | {meaning} | " + " | ".join("yes" if scope in r else "" for r in ROLES.values()) + " |"
        assert row in doc, f"docs/security.md row for {scope} is out of date"


def test_privacy_model_purpose_table_matches_code() -> None:
    from candor.consent.purposes import DEFAULT_PURPOSES

    doc = (ROOT / "docs" / "privacy-model.md").read_text()
    for p in DEFAULT_PURPOSES.values():

        def basis(j: str, p: object = p) -> str:
            return p.basis_in(j).replace("_", " ")  # type: ignore[attr-defined]

        row = f"| `{p.name}` | {p.description} | {basis('EU')} | {basis('US-CA')} | {basis('US')} |"
        assert row in doc, f"docs/privacy-model.md: the row for {p.name} is out of date"
