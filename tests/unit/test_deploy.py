"""deploy/ checked against the code, since Docker cannot run here: every long-running process
distributed mode needs is a service running a real CLI command with real options; every
CASHMARKETS_* variable is a setting; each process gets what it refuses to start without (checked
by running the same checks the process runs at start, on the settings the compose file gives
it); every service restarts and has a health check that asks the port the process serves;
Redis keeps every acknowledged command; nginx routes to the services' ports."""

from __future__ import annotations

import inspect
import itertools
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
import typer
import yaml

from cashmarkets import cli
from cashmarkets.bootstrap import apikey_master_key, build_engine, jwt_secret
from cashmarkets.ops.settings import ENV_PREFIX, Settings
from cashmarkets.runtime.chart_setup import chain_adapter, chart_schedulers, local_beacon_secret
from cashmarkets.runtime.pricefeed import build_feed

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_TEXT = (DEPLOY / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# What an operator puts in deploy/.env (the variables compose requires, `${VAR:?…}`).
OPERATOR_ENV = {
    "CASHMARKETS_JWT_SECRET": "s" * 48,
    "CASHMARKETS_APIKEY_MASTER_KEY": "ab" * 32,
    "CASHMARKETS_BEACON_KEY": "cd" * 32,
}
SETTINGS_FIELDS = {f.name for f in msgspec.structs.fields(Settings)}
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}` and `${VAR:?error}`."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        found = env.get(name)
        if op in (":-", ":?") and not found:
            found = None
        if found is not None:
            return found
        if op and op.endswith("?"):
            raise AssertionError(f"compose would refuse to start: {name} unset ({arg})")
        return arg if op else ""

    return _VARIABLE.sub(one, value)


def dockerfile_env() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                key, _, value = pair.partition("=")
                out[key] = value
    return out


def app_services() -> dict[str, dict[str, Any]]:
    """The services running the cashmarkets image, by name."""
    return {n: s for n, s in SERVICES.items() if (s.get("command") or [""])[0] == "cashmarkets"}


def service_env(service: dict[str, Any], operator: dict[str, str] | None = None) -> dict[str, str]:
    """What the process sees: the image's ENV, then the service's environment, interpolated."""
    given = OPERATOR_ENV if operator is None else operator
    env = dict(dockerfile_env())
    for key, value in (service.get("environment") or {}).items():
        env[key] = interpolate(str(value), given)
    return env


def service_settings(name: str, tmp_path: Path, operator: dict[str, str] | None = None) -> Settings:
    env = service_env(SERVICES[name], operator)
    env["CASHMARKETS_DATA_DIR"] = str(tmp_path / name)  # nothing generated there: all is given
    return Settings.from_env(env)


def cli_commands() -> dict[str, Any]:
    group = typer.main.get_command(cli.app)
    return dict(group.commands)  # type: ignore[attr-defined]


def long_running_commands() -> set[str]:
    """Top-level commands that run until stopped (they raise the open-files limit at start)."""
    found = set()
    for info in cli.app.registered_commands:
        assert info.callback is not None
        name = info.name or info.callback.__name__.replace("_", "-")
        source = inspect.getsource(info.callback)
        if "long_running(" in source or "_serve_http(" in source:
            found.add(name)
    return found


def listening_port(service: dict[str, Any]) -> int | None:
    """The HTTP or WebSocket port the service's command listens on (`--port`)."""
    command = service["command"]
    return int(command[command.index("--port") + 1]) if "--port" in command else None


def refuses_without(name: str, settings: Settings) -> None:
    """The checks each distributed process makes at start (each raises SystemExit on a missing
    or bad setting), run on `settings`."""
    command = SERVICES[name]["command"][1]
    if command in ("engine", "poller"):
        assert settings.redis_url, f"{name}: cashmarkets {command} needs CASHMARKETS_REDIS_URL"
    if command in ("api", "gateway", "chartgame", "projector", "engine"):
        assert settings.distributed, f"{name}: needs CASHMARKETS_DATABASE_URL and CASHMARKETS_REDIS_URL"
    if command in ("api", "gateway"):  # build_services
        jwt_secret(settings)
        apikey_master_key(settings)
    if command == "chartgame":  # run_chartgame -> chart_schedulers (beacon key, chain adapter)
        assert chart_schedulers(settings, SimpleNamespace(engine=build_engine()))
        chain_adapter(settings)
    if command == "api" and settings.beacon_source == "local":  # the round verification documents
        local_beacon_secret(settings)
    if command == "poller":
        assert build_feed(settings, lambda _tick: None) is not None, "nothing to poll"


# ---- the processes ------------------------------------------------------------------------------


def test_every_long_running_command_distributed_mode_needs_is_a_service() -> None:
    needed = long_running_commands() - {"serve"}  # serve is embedded mode
    assert needed >= {"api", "engine", "projector", "poller", "gateway", "chartgame"}
    running = {s["command"][1] for s in app_services().values()}
    assert needed <= running, f"no service runs {sorted(needed - running)}"
    assert "migrate" in running


def test_every_service_runs_a_real_command_with_real_options() -> None:
    commands = cli_commands()
    for name, service in app_services().items():
        command = service["command"]
        assert command[1] in commands, f"{name}: no command cashmarkets {command[1]}"
        options = {opt for param in commands[command[1]].params for opt in param.opts}
        for word in command[2:]:
            if word.startswith("-"):
                assert word in options, f"{name}: cashmarkets {command[1]} has no option {word}"


def test_every_cashmarkets_variable_is_a_setting() -> None:
    names = set(re.findall(r"\b(CASHMARKETS_[A-Z0-9_]+)\b", COMPOSE_TEXT)) | {
        k for k in dockerfile_env() if k.startswith(ENV_PREFIX)
    }
    assert len(names) > 10
    unknown = {n for n in names if n.removeprefix(ENV_PREFIX).lower() not in SETTINGS_FIELDS}
    assert unknown == set()


def test_each_process_gets_what_it_refuses_to_start_without(tmp_path: Path) -> None:
    for name in app_services():
        if name == "migrate":
            assert service_settings(name, tmp_path).database_url
            continue
        refuses_without(name, service_settings(name, tmp_path))


@pytest.mark.parametrize(
    ("service", "missing"),
    [
        ("api", "CASHMARKETS_JWT_SECRET"),
        ("gateway", "CASHMARKETS_APIKEY_MASTER_KEY"),
        ("chartgame", "CASHMARKETS_BEACON_KEY"),
    ],
)
def test_the_checks_catch_a_missing_secret(tmp_path: Path, service: str, missing: str) -> None:
    # Compose itself refuses (`${VAR:?…}`)...
    operator = {k: v for k, v in OPERATOR_ENV.items() if k != missing}
    with pytest.raises(AssertionError, match="compose would refuse to start"):
        service_settings(service, tmp_path, operator)
    # ...and so would the process without it.
    settings = service_settings(service, tmp_path)
    refuses_without(service, settings)
    field = missing.removeprefix(ENV_PREFIX).lower()
    with pytest.raises(SystemExit):
        refuses_without(service, msgspec.structs.replace(settings, **{field: None}))


def test_every_secret_the_code_demands_is_required_and_documented() -> None:
    """A secret read through `local_secret` (generated in embedded mode, required in distributed
    mode) must be given to every process, be required by compose, and be in the README."""
    package = ROOT / "src" / "cashmarkets"
    callers = [package / "bootstrap.py", package / "runtime" / "chart_setup.py"]
    source = "\n".join(path.read_text() for path in callers)
    secrets = set(re.findall(r'"(CASHMARKETS_[A-Z_]+)",\s*(?:lambda|\n)', source))
    assert secrets == {"CASHMARKETS_JWT_SECRET", "CASHMARKETS_APIKEY_MASTER_KEY", "CASHMARKETS_BEACON_KEY"}
    assert len(re.findall(r"\blocal_secret\(", source)) == len(secrets)  # no other caller
    everywhere = "\n".join(p.read_text() for p in package.rglob("*.py") if p not in callers)
    assert len(re.findall(r"\blocal_secret\(", everywhere)) == 1  # the definition
    readme = (ROOT / "README.md").read_text()
    distributed = readme[readme.index("**Distributed**") : readme.index("## Configuration")]
    for secret in secrets:
        assert re.search(rf"{secret}: \$\{{{secret}:\?", COMPOSE_TEXT), f"{secret} is not required by compose"
        for name, service in app_services().items():
            assert secret in (service.get("environment") or {}), f"{name} lacks {secret}"
        assert secret in distributed, f"the README's distributed section does not name {secret}"
    for needed in ("CASHMARKETS_DATABASE_URL", "CASHMARKETS_REDIS_URL", "CASHMARKETS_PUBLIC_URL"):
        assert needed in distributed
    assert "/api/v1/admin/deposits" in distributed and "users set-role" in distributed


# ---- restarts, health, durability, routing -------------------------------------------------------


def one_shot(name: str) -> bool:
    """A job the others wait to complete (e.g. migrate): no health check to keep."""
    return any(
        (s.get("depends_on") or {}).get(name, {}).get("condition") == "service_completed_successfully"
        for s in SERVICES.values()
        if isinstance(s.get("depends_on"), dict)
    )


def test_every_service_restarts_and_has_a_health_check() -> None:
    for name, service in SERVICES.items():
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), name
        if one_shot(name):
            assert service["restart"] == "on-failure", name
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), f"{name} has no health check"


def test_health_checks_ask_the_port_the_process_serves(tmp_path: Path) -> None:
    for name, service in app_services().items():
        if one_shot(name):
            continue
        test = " ".join(service["healthcheck"]["test"])
        found = re.search(r"127\.0\.0\.1:(\d+)(/\w+)", test)
        assert found, f"{name}: {test}"
        port, path = int(found[1]), found[2]
        if path == "/metrics":
            assert port == service_settings(name, tmp_path).metrics_port, name
        else:
            assert (path, port) == ("/health", listening_port(service)), name


def test_redis_fsyncs_every_command_and_postgres_and_redis_keep_their_data() -> None:
    command = SERVICES["redis"]["command"]
    pairs = set(itertools.pairwise(command))
    assert ("--appendonly", "yes") in pairs and ("--appendfsync", "always") in pairs
    assert any(v.endswith(":/data") for v in SERVICES["redis"]["volumes"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in SERVICES["postgres"]["volumes"])


def test_exactly_one_engine_and_poller_and_the_schedulers_share_their_chains() -> None:
    for name in ("engine", "poller"):  # not fenced: exactly one each
        assert SERVICES[name].get("deploy", {}).get("replicas", 1) == 1, name
    chart = SERVICES["chartgame"]
    if chart.get("deploy", {}).get("replicas", 1) > 1:  # the standby continues the same chains
        assert any(v.endswith(":/data") and not v.startswith(("/", ".")) for v in chart["volumes"])


def test_nginx_routes_http_and_websockets_to_the_services() -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    upstreams = dict(re.findall(r"upstream (\w+) \{\s*server ([\w.:]+);", conf))
    assert len(upstreams) == 2
    for upstream, target in upstreams.items():
        host, _, port = target.partition(":")
        assert host in SERVICES, f"{upstream}: no service {host}"
        assert int(port) == listening_port(SERVICES[host]), upstream
        assert f"proxy_pass http://{upstream};" in conf
    ws = re.search(r"location = /ws \{(.*?)\n    \}", conf, re.S)
    assert ws and "cashmarkets_ws" in ws[1] and "proxy_set_header Upgrade $http_upgrade;" in ws[1]
    assert "proxy_set_header Connection $connection_upgrade;" in ws[1]
    assert upstreams["cashmarkets_ws"].startswith("gateway:")
    nginx = SERVICES["nginx"]
    assert "8000:8000" in nginx["ports"] and {"api", "gateway"} <= set(nginx["depends_on"])
