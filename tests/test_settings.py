"""Settings: TOML and environment (env wins), with one clear line for every wrong setting."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from provisioner import settings
from provisioner.errors import ConfigError


def test_embedded_defaults(tmp_path: Path) -> None:
    s = settings.load(None, {"PROVISIONER_DATA_DIR": str(tmp_path)})
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.database_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'provisioner.db'}"
    assert [n.name for n in s.nodes] == ["local"] and s.nodes[0].libvirt_uri == "test:///default"
    assert [p.name for p in s.plans] == ["small", "medium", "large"]
    assert [p.requires_approval for p in s.plans] == [False, False, True]
    assert [i.name for i in s.images] == ["debian-12"]
    assert s.admin_token is None


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "provisioner.toml"
    config.write_text(
        'port = 9000\nhost = "0.0.0.0"\n'
        "[plans.tiny]\nvcpus = 1\nmemory_mib = 512\ndisk_gib = 5\nrequires_approval = false\n"
        '[images.alpine]\nbase_volume = "alpine.qcow2"\n'
    )
    s = settings.load(str(config), {"PROVISIONER_PORT": "9100", "API_TOKEN": "compat"})
    assert (s.host, s.port, s.admin_token) == ("0.0.0.0", 9100, "compat")
    assert [p.name for p in s.plans] == ["tiny"] and [i.name for i in s.images] == ["alpine"]


def test_nodes_file_and_compat_node(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.json"
    nodes.write_text('[{"name": "n1", "ssh_host": "10.0.0.1", "capacity": {"vcpus": 8}}]')
    s = settings.load(None, {"PROVISIONER_NODES": str(nodes)})
    assert s.nodes[0].name == "n1" and s.nodes[0].ssh_port == 2222
    assert s.nodes[0].capacity.vcpus == 8
    compat = settings.load(None, {"SSH_HOST": "node.example", "SSH_PORT": "22", "SSH_USER": "ops"})
    assert (compat.nodes[0].ssh_host, compat.nodes[0].ssh_port) == ("node.example", 22)


@pytest.mark.parametrize(
    ("env", "config", "named"),
    [
        ({"PROVISIONER_PORT": "eighty"}, None, "PROVISIONER_PORT"),
        ({"PROVISIONER_PORT": "70000"}, None, "PROVISIONER_PORT"),
        ({}, "port = [", "PROVISIONER_CONFIG"),
        ({}, "[plans.x]\nvcpus = 1\n", "plans.x.memory_mib"),
        ({}, "[plans.x]\nvcpus = 1\nmemory_mib = 512\ndisk_gib = 1\ncpus = 2\n", "plans.x"),
        ({}, "[images.x]\nos = 'linux'\n", "images.x.base_volume"),
        ({"PROVISIONER_NODES": "/nonexistent/nodes.toml"}, None, "PROVISIONER_NODES"),
        (
            {"SSH_HOST": "h", "SSH_PRIVATE_KEY_ED25519_BASE64_ENCODED": "***"},
            None,
            "SSH_PRIVATE_KEY",
        ),
    ],
)
def test_wrong_settings_name_the_setting(
    tmp_path: Path, env: dict[str, str], config: str | None, named: str
) -> None:
    path = None
    if config is not None:
        path = tmp_path / "bad.toml"
        path.write_text(config)
    with pytest.raises(ConfigError) as caught:
        settings.load(str(path) if path else None, env)
    assert named in caught.value.message


def run_serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `provisioner serve` with only `env` set; it is expected to refuse to start."""
    return subprocess.run(
        [str(Path(__file__).parent.parent / ".venv/bin/provisioner"), "serve"],
        env={"PROVISIONER_DATA_DIR": str(tmp_path), "PATH": "/usr/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_serve_refuses_a_bad_setting_with_one_line(tmp_path: Path) -> None:
    result = run_serve(tmp_path, PROVISIONER_PORT="eighty")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "provisioner: PROVISIONER_PORT must be a whole number, got 'eighty'"
    ]


def test_serve_refuses_an_unreachable_database(tmp_path: Path) -> None:
    result = run_serve(
        tmp_path, PROVISIONER_DATABASE_URL="postgresql+asyncpg://nobody@127.0.0.1:1/none"
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "PROVISIONER_DATABASE_URL" in result.stderr.strip().splitlines()[-1]


def test_slack_is_off_without_a_bot_token_and_on_with_one() -> None:
    assert settings.load(None, {}).slack is None
    slack = settings.load(
        None,
        {
            "SLACK_BOT_TOKEN": "xoxb-1",
            "SLACK_SIGNING_SECRET": "s",
            "PROVISIONER_OPS_USERS": "U1, U2",
            "PROVISIONER_OPS_CHANNEL": "C9",
        },
    ).slack
    assert slack is not None and slack.ops_users == {"U1", "U2"} and slack.ops_channel == "C9"
    assert (slack.slash_command, slack.api_url) == ("/workspace", "https://slack.com/api/")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, "SLACK_SIGNING_SECRET"),
        ({"SLACK_BOT_TOKEN": "xoxp-user", "SLACK_SIGNING_SECRET": "s"}, "SLACK_BOT_TOKEN"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "nope"}, "SLACK_APP_TOKEN"),
        (
            {
                "SLACK_BOT_TOKEN": "xoxb-1",
                "SLACK_SIGNING_SECRET": "s",
                "PROVISIONER_SLASH_COMMAND": "ws",
            },
            "PROVISIONER_SLASH_COMMAND",
        ),
        ({"PROVISIONER_CORS_ORIGINS": "ftp://x"}, "PROVISIONER_CORS_ORIGINS"),
    ],
)
def test_wrong_slack_settings_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings.load(None, env)
    assert named in caught.value.message
