"""Import of QRMI's qrmi_config.json: ``[daemon] qrmi_config`` and ``qrmid config import-qrmi``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from qrmid.cli import main
from qrmid.ops import qrmi_import
from qrmid.ops.config import ConfigError, load

IBM_KEY = "ibm-apikey-7d0e"
AWS_SECRET = "aws-secret-41bb"
PASQAL_SECRET = "pasqal-secret-09f2"
QCS_KEY = "qcs-apikey-c3a1"
IQM_TOKEN = "iqm-token-55e0"
FELIS_KEY = "ZmVsaXM6dXNlcnBhc3M="
SECRETS = [IBM_KEY, AWS_SECRET, PASQAL_SECRET, QCS_KEY, IQM_TOKEN, FELIS_KEY]

IBM_QS = {"QRMI_IBM_QS_ENDPOINT": "https://qs.example.org", "QRMI_IBM_QS_IAM_ENDPOINT": "https://iam.cloud.ibm.com",
          "QRMI_IBM_QS_IAM_APIKEY": IBM_KEY, "QRMI_IBM_QS_SERVICE_CRN": "crn:v1:bluemix:public:quantum:site",
          "QRMI_IBM_QS_AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY": AWS_SECRET,
          "QRMI_IBM_QS_S3_ENDPOINT": "https://s3.us-east.cloud-object-storage.appdomain.cloud",
          "QRMI_IBM_QS_S3_BUCKET": "qrmi-jobs", "QRMI_IBM_QS_S3_REGION": "us-east"}

# The layout of QRMI's own example config and of the SPANK plugin's demo: one entry per resource.
SITE = {"resources": [
    {"name": "ibm_torino", "type": "ibm-quantum-system", "is_dynamic": False,
     "environment": {**IBM_QS, "QRMI_JOB_TIMEOUT_SECONDS": "1800", "QRMI_IBM_QS_TIMEOUT_SECONDS": "30"}},
    {"name": "FRESNEL", "type": "pasqal-cloud",
     "environment": {"QRMI_PASQAL_CLOUD_PROJECT_ID": "d5b4e9b0-project", "QRMI_PASQAL_CLOUD_CLIENT_ID": "svc-client",
                     "QRMI_PASQAL_CLOUD_CLIENT_SECRET": PASQAL_SECRET}},
    {"name": "ibm_kingston", "type": "ibm-quantum-compute-service",
     "environment": {"QRMI_IBM_QCS_ENDPOINT": "https://quantum.cloud.ibm.com/api/v1",
                     "QRMI_IBM_QCS_IAM_ENDPOINT": "https://iam.cloud.ibm.com", "QRMI_IBM_QCS_IAM_APIKEY": QCS_KEY,
                     "QRMI_IBM_QCS_SERVICE_CRN": "crn:v1:bluemix:public:quantum-computing:us-east:a/1::",
                     "QRMI_IBM_QCS_SESSION_MODE": "batch", "QRMI_IBM_QCS_SESSION_MAX_TTL": "28800"}},
    {"name": "garnet:mock", "type": "iqm-server",
     "environment": {"QRMI_IQM_ISA_ENDPOINT": "https://garnet.iqm.example", "QRMI_IQM_ISA_TOKEN": IQM_TOKEN}},
    {"name": "felis", "type": "alice-bob-felis",
     "environment": {"QRMI_AB_FELIS_BASE_ENDPOINT": "https://api.alice-bob.com", "QRMI_AB_FELIS_API_KEY": FELIS_KEY,
                     "QRMI_JOB_ACQUISITION_TOKEN": "per-job"}},
    {"name": "qpp_local", "type": "pasqal-local", "environment": {"QRMI_WARDEN_URL": "http://warden:4207"}},
    {"name": "ibm_instance", "type": "ibm-quantum-compute-service", "is_dynamic": True,
     "environment": {"QRMI_IBM_QCS_IAM_APIKEY": QCS_KEY}},
    {"name": "ibm_heron_da", "type": "direct-access",
     "environment": {key.replace("_QS_", "_DA_"): value for key, value in IBM_QS.items()}},
    {"name": "ibm_broken", "type": "ibm-quantum-system",
     "environment": {"QRMI_IBM_QS_ENDPOINT": "https://qs.example.org", "QRMI_IBM_QS_IAM_APIKEY": IBM_KEY}},
    {"name": "dwave", "type": "annealer", "environment": {}},
    {"name": "FRESNEL", "type": "pasqal-cloud", "environment": {}},
    {"type": "pasqal-cloud"},
]}


def write(path: Path, doc: Any, mode: int = 0o600) -> Path:
    path.write_text(json.dumps(doc, indent=2))
    path.chmod(mode)
    return path


def test_every_resource_is_mapped_or_named_in_a_warning() -> None:
    imported = qrmi_import.convert(SITE, "qrmi_config.json")
    tables = {table["name"]: table for table in imported.resources}
    assert list(tables) == ["ibm_torino", "FRESNEL", "ibm_kingston", "garnet-mock", "felis", "qpp_local",
                            "ibm_heron_da"]

    torino = tables["ibm_torino"]
    assert torino["type"] == "ibm-quantum-system", "a native type maps to qrmid's own adapter"
    assert {k: v for k, v in torino.items() if k.startswith("QRMI_IBM_QS_")} == IBM_QS, "QRMI keys are config keys"
    assert torino["QRMI_IBM_QS_IAM_APIKEY"] == IBM_KEY and torino["QRMI_JOB_TIMEOUT_SECONDS"] == "1800"
    assert "QRMI_IBM_QS_TIMEOUT_SECONDS" not in torino
    assert tables["FRESNEL"] == {"type": "pasqal-cloud", "name": "FRESNEL",
                                 "QRMI_PASQAL_CLOUD_PROJECT_ID": "d5b4e9b0-project",
                                 "QRMI_PASQAL_CLOUD_CLIENT_ID": "svc-client",
                                 "QRMI_PASQAL_CLOUD_CLIENT_SECRET": PASQAL_SECRET}

    kingston = tables["ibm_kingston"]
    assert (kingston["type"], kingston["resource_type"]) == ("qrmi", "ibm-quantum-compute-service")
    assert kingston["environment"]["QRMI_IBM_QCS_SESSION_MAX_TTL"] == "28800", "QRMI reads every value as text"
    assert tables["garnet-mock"] == {"type": "qrmi", "name": "garnet-mock", "resource_type": "iqm-server",
                                     "resource_id": "garnet:mock", "environment": SITE["resources"][3]["environment"]}
    assert tables["felis"]["environment"] == {"QRMI_AB_FELIS_BASE_ENDPOINT": "https://api.alice-bob.com",
                                              "QRMI_AB_FELIS_API_KEY": FELIS_KEY}
    assert tables["qpp_local"]["resource_type"] == "pasqal-local"
    heron = tables["ibm_heron_da"]
    assert heron["type"] == "ibm-quantum-system" and heron["QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY"] == AWS_SECRET

    warnings = "\n".join(imported.warnings)
    for expected in ["resource 'ibm_torino': key 'QRMI_IBM_QS_TIMEOUT_SECONDS' has no ibm-quantum-system equivalent",
                     "resource 'garnet:mock': not a valid qrmid resource name: served as 'garnet-mock'",
                     "resource 'felis': key 'QRMI_JOB_ACQUISITION_TOKEN' is set per job",
                     "resource 'ibm_instance': is_dynamic resources",
                     "resource 'ibm_heron_da': type 'direct-access' was removed from QRMI",
                     "resource 'ibm_broken': cannot be served as ibm-quantum-system",
                     "resource 'dwave': unknown QRMI resource type 'annealer'",
                     "resource 'FRESNEL' is defined twice",
                     "resources[11] has no 'name'"]:
        assert expected in warnings, (expected, warnings)
    assert "QRMI_IBM_QS_IAM_ENDPOINT: Field required" in warnings, "the missing keys are named"
    assert not any(secret in warnings for secret in SECRETS), "warnings never show a value"


def test_cli_prints_toml_that_loads_to_the_same_resources(tmp_path: Path) -> None:
    source = write(tmp_path / "qrmi_config.json", SITE)
    outcome = CliRunner().invoke(main, ["config", "import-qrmi", str(source)])
    assert outcome.exit_code == 0, outcome.output
    assert "chmod 600" in outcome.stderr and "warning: " in outcome.stderr
    assert "is_dynamic" in outcome.stderr and IBM_KEY not in outcome.stderr

    target = tmp_path / "qrmid.toml"
    target.write_text(f'[daemon]\nsocket = "{tmp_path}/q.sock"\n\n{outcome.stdout}')
    target.chmod(0o600)
    config = load(target)
    served = {resource.name: resource for resource in config.resources}
    assert {name: resource.type for name, resource in served.items()} == {
        "ibm_torino": "ibm-quantum-system", "FRESNEL": "pasqal-cloud", "ibm_kingston": "qrmi",
        "garnet-mock": "qrmi", "felis": "qrmi", "qpp_local": "qrmi", "ibm_heron_da": "ibm-quantum-system"}
    torino = served["ibm_torino"]
    assert torino.iam_apikey.get_secret_value() == IBM_KEY and torino.job_timeout_seconds == 1800  # type: ignore
    garnet = served["garnet-mock"]
    assert garnet.qrmi_id == "garnet:mock"  # type: ignore[union-attr]
    assert garnet.environment["QRMI_IQM_ISA_TOKEN"].get_secret_value() == IQM_TOKEN  # type: ignore[union-attr]
    assert IQM_TOKEN not in repr(config), "secrets stay hidden once loaded"

    target.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600") as refused:
        load(target)
    assert "resources[4].environment" in str(refused.value), "a qrmi resource's environment counts as a secret"


def test_cli_refuses_unusable_files(tmp_path: Path) -> None:
    runner = CliRunner()
    for path, message in [(tmp_path / "absent.json", "cannot read"),
                          (write(tmp_path / "bad.json", {"resources": {}}), "expected an object with a 'resources'"),
                          (write(tmp_path / "none.json", {"resources": [{"name": "x", "type": "annealer"}]}),
                           "no resource could be imported")]:
        outcome = runner.invoke(main, ["config", "import-qrmi", str(path)])
        assert outcome.exit_code == 1 and message in outcome.stderr, outcome.stderr
    (tmp_path / "text.json").write_text("{resources")
    outcome = runner.invoke(main, ["config", "import-qrmi", str(tmp_path / "text.json")])
    assert outcome.exit_code == 1 and "not valid JSON" in outcome.stderr


def test_daemon_config_key_adds_the_resources(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = write(tmp_path / "qrmi_config.json", SITE)
    target = tmp_path / "qrmid.toml"
    target.write_text(f'[daemon]\nqrmi_config = "{source}"\n\n[[resources]]\ntype = "noop"\nname = "local-noop"\n')
    with caplog.at_level(logging.WARNING, logger="qrmid.ops.qrmi_import"):
        config = load(target)
    assert [resource.name for resource in config.resources] == [
        "local-noop", "ibm_torino", "FRESNEL", "ibm_kingston", "garnet-mock", "felis", "qpp_local", "ibm_heron_da"]
    assert "is_dynamic resources" in caplog.text and not any(secret in caplog.text for secret in SECRETS)
    assert config.secret_keys() == [], "the TOML itself holds no secret: it may stay group-readable"

    target.write_text(f'[daemon]\nqrmi_config = "{source}"\n')
    assert [resource.type for resource in load(target).resources][:2] == ["ibm-quantum-system", "pasqal-cloud"], \
        "without resources in the TOML, the file's replace the embedded default"


def test_daemon_config_errors(tmp_path: Path) -> None:
    source = write(tmp_path / "qrmi_config.json", SITE)
    target = tmp_path / "qrmid.toml"
    target.write_text(f'[daemon]\nqrmi_config = "{source}"\n\n[[resources]]\ntype = "noop"\nname = "FRESNEL"\n')
    with pytest.raises(ConfigError) as refused:
        load(target)
    assert f"resource 'FRESNEL' is defined both in the config file and in {source}" in str(refused.value)

    source.chmod(0o640)
    target.write_text(f'[daemon]\nqrmi_config = "{source}"\n')
    with pytest.raises(ConfigError) as refused:
        load(target)
    assert f"chmod 600 {source}" in str(refused.value)

    target.write_text(f'[daemon]\nqrmi_config = "{tmp_path}/absent.json"\n')
    with pytest.raises(ConfigError, match="absent.json: cannot read"):
        load(target)


def test_qrmi_reads_the_same_file_as_the_import(tmp_path: Path) -> None:
    """QRMI's own loader (``qrmi.Config.load``) on the entries it accepts: the import keeps every static one it
    can serve, under the same name and type, with the same settings."""
    import qrmi

    accepted = [entry for entry in SITE["resources"] if entry.get("type") not in ("annealer", "direct-access")
                and "name" in entry][:-1]  # QRMI itself refuses unknown types and repeats
    path = write(tmp_path / "qrmi_config.json", {"resources": accepted})
    theirs = qrmi.Config.load(str(path)).resource_map
    ours = {table.get("resource_id") or table["name"]: table for table in qrmi_import.read(path).resources}
    served = {name for name, entry in theirs.items() if not entry.is_dynamic and name != "ibm_broken"}
    assert set(ours) == served
    for name in served:
        kind = str(theirs[name].resource_type).removeprefix("ResourceType.")
        table = ours[name]
        assert kind == (qrmi_import.RESOURCE_TYPES[table.get("resource_type", table["type"])]), name
        settings = table.get("environment") or {k: v for k, v in table.items() if k.startswith(("QRMI_", "PASQAL_"))}
        assert settings.items() <= theirs[name].environment.items(), name
