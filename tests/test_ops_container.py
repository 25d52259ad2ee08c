"""The Dockerfile, .dockerignore and docker-compose.yml, and the Dockerfile's
commands replayed without Docker: wheel, fresh venv, installed console script."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import require_tool
from tests.support.ops import REPO, output_of, run

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "docker-compose.yml"
HADOLINT_CONFIG = REPO / ".hadolint.yaml"
CONFIG_PATH = "/etc/binance-futures-exporter/config.yaml"
PORT = 10317


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    stage: int


def dockerfile_instructions() -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line.strip())
        pending = ""
    assert not pending, "Dockerfile ends inside a continuation"
    instructions: list[Instruction] = []
    stage = -1
    for text in logical:
        keyword, _, arguments = text.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), arguments.strip(), stage))
    return instructions


def of(keyword: str, stage: int | None = None) -> list[Instruction]:
    return [i for i in dockerfile_instructions()
            if i.keyword == keyword and (stage is None or i.stage == stage)]


def last_stage() -> int:
    return max(i.stage for i in dockerfile_instructions())


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def healthcheck_command() -> list[str]:
    (healthcheck,) = of("HEALTHCHECK")
    match = re.search(r"\bCMD\s+(\[.*\])\s*$", healthcheck.arguments)
    assert match, f"HEALTHCHECK must use CMD in exec form: {healthcheck.arguments}"
    return exec_form(match.group(1))


def context_copies() -> list[str]:
    """Sources that COPY instructions take from the build context."""
    sources: list[str] = []
    for instruction in of("COPY"):
        if "--from=" in instruction.arguments:
            continue
        words = [w for w in instruction.arguments.split() if not w.startswith("--")]
        sources.extend(words[:-1])
    return sources


# ---------------------------------------------------------------------------
# Dockerfile


def test_hadolint() -> None:
    hadolint = require_tool("hadolint")
    args = [hadolint]
    if HADOLINT_CONFIG.exists():
        args += ["--config", str(HADOLINT_CONFIG)]
    result = run([*args, "--failure-threshold", "style", str(DOCKERFILE)])
    assert result.returncode == 0, output_of(result)
    assert not result.stdout.strip(), output_of(result)


def test_hadolint_ignores_are_explained() -> None:
    for number, line in enumerate(DOCKERFILE.read_text(encoding="utf-8").splitlines(), 1):
        if "hadolint ignore" in line:
            assert re.search(r"hadolint ignore=\S+\s+\S.{10,}", line), (
                f"Dockerfile:{number}: say why the rule is ignored on the same line")
    if HADOLINT_CONFIG.exists():
        lines = HADOLINT_CONFIG.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            if re.match(r"\s*-\s*(DL|SC)\d+", line):
                before = lines[number - 2] if number > 1 else ""
                assert "#" in line or before.strip().startswith("#"), (
                    f".hadolint.yaml:{number}: explain the ignored rule in a comment")


def test_dockerfile_is_multi_stage_on_a_pinned_slim_python() -> None:
    froms = of("FROM")
    assert len(froms) >= 2
    for instruction in froms:
        image = instruction.arguments.split()[0]
        match = re.fullmatch(r"python:(3\.(\d+))-slim(-\w+)?", image)
        assert match and int(match.group(2)) >= 11, f"pin a slim Python >= 3.11 tag: {image}"
    assert re.search(r"\bAS\s+build$", froms[0].arguments, re.I)
    assert len({i.arguments.split()[0] for i in froms}) == 1, "both stages on the same base"


def test_dockerfile_builds_a_wheel_into_a_venv() -> None:
    build_runs = " ".join(i.arguments for i in of("RUN", 0))
    assert "pip wheel . -c constraints.txt " in build_runs, "build from the lock file"
    assert "python -m venv --without-pip /opt/venv" in build_runs, "no pip at run time"
    copies = [i.arguments for i in of("COPY", last_stage())]
    assert any(c.startswith("--from=build /opt/venv") for c in copies)
    assert of("RUN", last_stage()) == [], "the runtime stage only copies the venv"


def test_dockerfile_runtime_settings() -> None:
    runtime = last_stage()
    users = of("USER", runtime)
    assert users, "set a USER in the runtime stage"
    uid, _, gid = users[-1].arguments.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or gid.isdigit()), (
        "run as a numeric non-root user")
    assert [i.arguments for i in of("EXPOSE", runtime)] == [str(PORT)]
    env = " ".join(i.arguments for i in of("ENV", runtime))
    assert re.search(r"\bPYTHONDONTWRITEBYTECODE=1\b", env)
    assert exec_form(of("ENTRYPOINT")[-1].arguments) == ["binance-futures-exporter"]
    assert exec_form(of("CMD")[-1].arguments) == ["--config", CONFIG_PATH]
    command = healthcheck_command()
    assert command[0] == "python"
    assert f"http://127.0.0.1:{PORT}/healthz" in " ".join(command)
    labels = " ".join(i.arguments for i in of("LABEL", runtime))
    assert f'org.opencontainers.image.version="{_version()}"' in labels
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels
    assert (REPO / "LICENSE").read_text(encoding="utf-8").split()[:2] == ["Apache", "License"]


def test_dockerfile_needs_no_frontend_from_docker_hub() -> None:
    first = DOCKERFILE.read_text(encoding="utf-8").splitlines()[0]
    assert not first.lower().startswith("# syntax"), "a syntax line pulls a BuildKit frontend"


def test_dockerfile_bakes_in_no_secret() -> None:
    for instruction in of("ENV") + of("ARG"):
        assert not re.search(r"(?i)(secret|api_?key|token|passw|private)",
                             instruction.arguments), instruction
    for source in context_copies():
        assert not re.search(r"(?i)(secret|\.pem$|config\.ya?ml$|\.env$)", source), source


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a match on a parent counts."""
    excluded = False
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        parts = path.split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_build_inputs_and_drops_the_rest() -> None:
    sources = context_copies()
    assert {"pyproject.toml", "README.md", "LICENSE", "constraints.txt", "exporter"} <= {
        s.rstrip("/") for s in sources}
    for source in sources:
        source_path = REPO / source
        files = [source_path] if source_path.is_file() else [
            p for p in source_path.rglob("*.py") if "__pycache__" not in p.parts]
        assert files, f"COPY {source}: nothing in the repository"
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            assert not _dockerignore_excludes(relative), f"{relative} excluded from the context"
    for stray in (".git/config", "config.yaml", "secrets/binance_api_key", ".venv/bin/python",
                  "tests/test_ops_container.py", "exporter/__pycache__/cli.cpython-312.pyc"):
        assert _dockerignore_excludes(stray), f"{stray} would be sent to the Docker daemon"


# ---------------------------------------------------------------------------
# docker-compose.yml


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def test_compose_services() -> None:
    services = compose()["services"]
    assert set(services) >= {"exporter", "prometheus", "alertmanager", "grafana"}
    exporter = services["exporter"]
    build = exporter["build"]
    assert (build if isinstance(build, str) else build["context"]) == "."
    command = exporter["command"]
    assert isinstance(command, list)
    assert "--demo" in command
    assert command[command.index("--listen") + 1] == f"0.0.0.0:{PORT}"
    assert exporter.get("read_only") is True
    grafana_env = services["grafana"]["environment"]
    assert str(grafana_env["GF_AUTH_ANONYMOUS_ENABLED"]).lower() == "true"
    assert grafana_env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    for name, service in services.items():
        if "image" in service and "build" not in service:
            image = service["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"


def test_compose_bind_mounts_exist_and_volumes_are_declared() -> None:
    document = compose()
    declared = set(document.get("volumes") or {})
    mounts = 0
    for name, service in document["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                mounts += 1
                assert (REPO / source).exists(), f"{name}: {source} is not in the repository"
            else:
                assert source in declared, f"{name}: named volume {source} not declared"
    assert mounts >= 3


def test_compose_wires_the_configs() -> None:
    services = compose()["services"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    config_flag = next(a for a in services["prometheus"]["command"]
                       if a.startswith("--config.file="))
    config_in_container = Path(config_flag.split("=", 1)[1])
    host_dir = mounts[str(config_in_container.parent)]
    assert (REPO / host_dir / config_in_container.name) == REPO / "prometheus" / "prometheus.yml"
    prometheus = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text("utf-8"))
    for rule_file in prometheus["rule_files"]:
        assert (REPO / host_dir / rule_file).is_file(), f"{rule_file} not next to prometheus.yml"
    hosts = {target.split(":")[0] for job in prometheus["scrape_configs"]
             for sc in job["static_configs"] for target in sc["targets"]}
    hosts |= {target.split(":")[0] for m in prometheus["alerting"]["alertmanagers"]
              for sc in m["static_configs"] for target in sc["targets"]}
    assert hosts - {"localhost"} <= set(services), f"targets that are no compose service: {hosts}"
    am_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["alertmanager"]["volumes"]}
    assert am_mounts["/etc/alertmanager/alertmanager.yml"] == "./prometheus/alertmanager.yml"


# ---------------------------------------------------------------------------
# The Dockerfile's commands without Docker: wheel -> venv -> console script


@dataclass(frozen=True)
class Installed:
    bin: Path

    def exporter(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run([str(self.bin / "binance-futures-exporter"), *args], timeout=timeout,
                   env=_clean_env())


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH and a neutral cwd: the installed wheel, not the checkout, must run."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("image")
    source = root / "src"
    source.mkdir()
    for copied in context_copies():  # exactly what `docker build` would copy
        origin = REPO / copied
        if origin.is_dir():
            shutil.copytree(origin, source / copied.rstrip("/"),
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, source / copied)
    wheels = root / "wheels"
    result = run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-w", str(wheels)],
                 cwd=source, timeout=300)
    assert result.returncode == 0, output_of(result)
    (wheel,) = wheels.glob("binance_futures_exporter-*.whl")
    venv = root / "venv"
    result = run([sys.executable, "-m", "venv", str(venv)], cwd=root)
    assert result.returncode == 0, output_of(result)
    result = run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
                 cwd=root, timeout=600)
    assert result.returncode == 0, output_of(result)
    return Installed(venv / "bin")


def _version() -> str:
    text = (REPO / "exporter" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'__version__\s*=\s*"([^"]+)"', text)
    assert match
    return match.group(1)


def test_installed_version(installed: Installed) -> None:
    result = installed.exporter("--version")
    assert result.returncode == 0, output_of(result)
    assert _version() in result.stdout + result.stderr


@dataclass(frozen=True)
class Layout:
    config: Path
    secrets: Path
    values: tuple[str, ...]


@pytest.fixture
def image_layout(tmp_path: Path) -> Layout:
    """<tmp>/etc/binance-futures-exporter/config.yaml with keys in <tmp>/run/secrets/*."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    secrets = tmp_path / "run" / "secrets"
    secrets.mkdir(parents=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    files = {
        "binance_api_key": "opsTestHmacKey" + "A" * 50,
        "binance_api_secret": "opsTestHmacSecret" + "B" * 47,
        "binance_ed25519_api_key": "opsTestEd25519Key" + "C" * 47,
        "binance_ed25519_key.pem": pem,
    }
    for name, value in files.items():
        (secrets / name).write_text(value + "\n", encoding="utf-8")
        (secrets / name).chmod(0o600)
    config = tmp_path / "etc" / "binance-futures-exporter" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({
        "listen": f":{PORT}",
        "endpoint": "testnet",
        "accounts": [
            {"name": "ops-hmac",
             "api_key_file": str(secrets / "binance_api_key"),
             "api_secret_file": str(secrets / "binance_api_secret")},
            {"name": "ops-ed25519",
             "api_key_file": str(secrets / "binance_ed25519_api_key"),
             "private_key_file": str(secrets / "binance_ed25519_key.pem")},
        ],
    }, sort_keys=False), encoding="utf-8")
    return Layout(config, secrets, tuple(files.values()))


def test_installed_check_config_reads_secret_files(installed: Installed,
                                                   image_layout: Layout) -> None:
    result = installed.exporter("--check-config", "--config", str(image_layout.config))
    assert result.returncode == 0, output_of(result)
    printed = result.stdout + result.stderr
    assert "ops-hmac" in printed and "ops-ed25519" in printed, output_of(result)
    for secret in image_layout.values:
        for line in secret.strip().splitlines():
            if len(line) > 8 and not line.startswith("-----"):
                assert line not in printed, "--check-config printed a secret"


def test_installed_check_config_fails_on_a_missing_secret(installed: Installed,
                                                          image_layout: Layout) -> None:
    (image_layout.secrets / "binance_api_secret").unlink()
    result = installed.exporter("--check-config", "--config", str(image_layout.config))
    assert result.returncode == 2, output_of(result)
    assert "api_secret_file" in result.stdout + result.stderr, output_of(result)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _require_default_port() -> None:
    """The HEALTHCHECK hard-codes port 10317: skip when it is busy here, fail in CI."""
    if not _port_free(PORT):
        message = f"port {PORT} is busy; the HEALTHCHECK command hard-codes it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def demo_on_default_port(installed: Installed) -> Iterator[subprocess.Popen[bytes]]:
    _require_default_port()
    process = subprocess.Popen(
        [str(installed.bin / "binance-futures-exporter"), "--demo", "--listen",
         f"127.0.0.1:{PORT}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_clean_env())
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_healthcheck_command(installed: Installed) -> None:
    """The HEALTHCHECK fails with nothing listening and passes against the exporter."""
    command = healthcheck_command()
    argv = [str(installed.bin / "python"), *command[1:]]
    _require_default_port()
    assert run(argv, timeout=30, env=_clean_env()).returncode != 0


def test_healthcheck_command_against_demo(installed: Installed,
                                          demo_on_default_port: subprocess.Popen[bytes]) -> None:
    argv = [str(installed.bin / "python"), *healthcheck_command()[1:]]
    deadline = time.monotonic() + 30
    while True:
        assert demo_on_default_port.poll() is None, "the demo exporter exited"
        result = run(argv, timeout=30, env=_clean_env())
        if result.returncode == 0:
            break
        assert time.monotonic() < deadline, output_of(result)
        time.sleep(0.3)
