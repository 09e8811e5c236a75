"""`qrmid config default` and the example site config: both check clean with `qrmid config check`, the default
reads back as the embedded default, and the example serves as it is shipped."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from daemons import ROOT, serving, short_dir, write_config
from munged import munged

from qrmid import examples
from qrmid.client import Client, payload_from_task_input
from qrmid.client_auth import ClientAuth
from qrmid.ops.config import ClusterSettings, Config, load
from qrmid.results import summarize

EXAMPLE = ROOT / "etc/qrmid.example.toml"


def qrmid(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qrmid", *args], capture_output=True, text=True, timeout=120)


def test_the_default_reads_back_as_the_embedded_default() -> None:
    printed = qrmid("config", "default")
    assert printed.returncode == 0, printed.stderr
    path = write_config(short_dir() / "default.toml", printed.stdout)
    checked = qrmid("config", "check", str(path))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == f"{path}: OK; resources: local-qiskit, local-pulser\n"
    assert load(path).model_dump() == Config().model_dump()


def test_the_default_shows_every_key_with_a_comment() -> None:
    text = qrmid("config", "default").stdout
    lines = text.splitlines()
    for section, info in Config.model_fields.items():
        if section == "resources":
            continue
        header = f"# [{section}]" if section == "cluster" else f"[{section}]"  # the cluster is off: commented
        start = lines.index(header)
        end = next((i for i in range(start + 1, len(lines)) if re.match(r"(# )?\[\w+\]$", lines[i])), len(lines))
        model = ClusterSettings if section == "cluster" else info.annotation
        for key, field in model.model_fields.items():
            shown = [i for i in range(start, end) if re.match(rf"(# )?{key} = |\[\[{section}\.{key}\]\]$", lines[i])]
            assert shown, f"[{section}] {key} is not shown"
            if field.description:
                assert lines[shown[0] - 1].startswith("# "), f"[{section}] {key} has no comment above it"
    assert "# dsn = (required)" in lines
    described = next(i for i, line in enumerate(lines) if line.startswith("max_payload_bytes = "))
    assert lines[described - 1] == "# largest payload accepted; at least 1024 and at most 1073741824"
    assert [r["type"] for r in tomllib.loads(text)["resources"]] == ["local-qiskit", "local-pulser"]


def test_the_example_site_config_checks_clean() -> None:
    checked = qrmid("config", "check", str(EXAMPLE))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == f"{EXAMPLE}: OK; resources: local-qiskit, local-pulser\n"
    sections = {line.split("]")[0].strip("[# ") for line in EXAMPLE.read_text().splitlines()
                if re.match(r"(# )?\[+[a-z]", line)}
    assert sections >= set(Config.model_fields), "every section is in the example"


def test_the_examples_commented_resources_are_valid_once_uncommented() -> None:
    text = re.sub(r"(?m)^# (\[\[resources\]\]|type =|name =|members =|policy =|fallback =|QRMI_[A-Z0-9_]+ =)", r"\1",
                  EXAMPLE.read_text())
    config = Config.model_validate(tomllib.loads(text))
    assert [r.type for r in config.resources] == ["local-qiskit", "local-pulser", "ibm-quantum-system",
                                                  "pasqal-cloud", "pool"]


def test_the_example_serves_users_over_munge() -> None:
    scratch = short_dir()
    socket = scratch / "qrmid.sock"
    with munged() as munge_socket:
        text = EXAMPLE.read_text()
        for key, value in (("socket", socket), ("path", scratch / "journal.db"), ("address", "127.0.0.1:0"),
                           ("munge_socket", munge_socket)):
            text, count = re.subn(rf'(?m)^{key} = "[^"]*"', f'{key} = "{value}"', text)
            assert count == 1, key
        path = write_config(scratch / "qrmid.toml", text)
        with serving(path, f"unix:{socket}"):
            auth = ClientAuth.resolve("munge", munge_socket=str(munge_socket))
            with Client(f"unix:{socket}", auth=auth) as client:
                _, data = client.run("local-qiskit", payload_from_task_input(examples.load("bell")))
    assert set(summarize(data)["pubs"][0]["meas"]) == {"00", "11"}


def test_the_service_instructions_install_the_example() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Running it as a service"):]
    block = section[section.index("```sh"):section.index("```\n", section.index("```sh") + 5)]
    assert "etc/qrmid.example.toml /etc/qrmid/qrmid.toml" in block
